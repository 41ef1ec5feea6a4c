"""The local stream runner: DynamoDB Local's stream -> the Lambda handler, as Lambda's event source mapping does."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

from backend_flask.config import ROOT
from backend_flask.lib import ddb
from toolbox import local_services, stream_runner
from toolbox.settings import messages_table

FAST = {"idle_poll": 0.05, "retry_delay": 0.05, "reconnect_delay": 0.2, "refresh_interval": 0.5}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until check() is true; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def shows(client, table: str, person: dict, group: str, message: dict) -> bool:
    """Whether the person's conversation list shows this message as the group's last one."""
    items = ddb.MessagesTable(client, table).list_message_groups(person["uuid"], limit=100)["items"]
    return [(r["message"], r["created_at"]) for r in items if r["uuid"] == group] == [
        (message["message"], message["created_at"])]


def both_show(client, table: str, convo: dict, message: dict) -> bool:
    return all(shows(client, table, p, convo["group"], message) for p in (convo["a"], convo["b"]))


def reply(client, table: str, convo: dict, text: str) -> dict:
    """b answers a (pattern D)."""
    messages = ddb.MessagesTable(client, table)
    return messages.create_message(message_group_uuid=convo["group"], sender=convo["b"], message=text)


class Recorder:
    """A handler in front of the real one that records every call and can fail on demand."""

    def __init__(self, real: Callable, fail: Callable[[dict, int], object] | None = None):
        self.real, self.fail = real, fail
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict, context) -> dict:
        with self.lock:
            self.calls.append(event)
            n = len(self.calls)
        if self.fail:
            outcome = self.fail(event, n)
            if outcome is not None:
                return outcome
        return self.real(event, context)

    def offers(self, matches: Callable[[dict], bool]) -> list[int]:
        """How many calls offered each record that `matches` (one count per record, in stream order)."""
        with self.lock:
            calls = list(self.calls)
        counts: dict[str, int] = {}
        for call in calls:
            for record in call["Records"]:
                if matches(record):
                    sequence = record["dynamodb"]["SequenceNumber"]
                    counts[sequence] = counts.get(sequence, 0) + 1
        return list(counts.values())

    def groups_seen(self) -> list[set[str]]:
        return [{r["dynamodb"]["Keys"]["pk"]["S"] for r in call["Records"]} for call in self.calls]


def fresh_table(client) -> str:
    name = f"stream-test-{uuid.uuid4().hex[:10]}"
    messages = ddb.MessagesTable(client, name)
    messages.create()
    return name


def own_runner(config, table: str, handler: Recorder, **options) -> stream_runner.StreamRunner:
    return stream_runner.start_thread(config.replace(ddb_message_table=table), handler=handler, **{**FAST, **options})


def test_conversation_lists_follow_a_new_message_within_2s(stream_runner, ddb_client, config, conversation):
    # GIVEN a conversation and the runner following the session's table
    table = config.ddb_message_table
    convo = conversation()
    # WHEN the other one answers (pattern D writes only the message)
    answer = reply(ddb_client, table, convo, "see you at 8")
    # THEN within 2 s both conversation rows show that answer and its time
    wait_for(lambda: both_show(ddb_client, table, convo, answer), 2.0, "rows moved to the answer")
    assert stream_runner.running


def test_handler_exception_is_retried_and_a_poison_batch_does_not_stop_the_runner(ddb_client, config,
                                                                                     conversation):
    # GIVEN a runner on a fresh table whose handler raises for its first call, and always for one group
    table = fresh_table(ddb_client)
    poison, healthy = conversation(table), conversation(table)
    poison_pk = ddb.MESSAGE_PREFIX + poison["group"]

    def fail(event: dict, n: int):
        if n == 1 or any(r["dynamodb"]["Keys"]["pk"]["S"] == poison_pk for r in event["Records"]):
            raise RuntimeError("handler bug")
        return None

    real = stream_runner.lambda_handler(ddb_client, table)
    recorder = Recorder(real, fail)
    runner = own_runner(config, table, recorder, max_attempts=3)
    try:
        # WHEN the poison group gets a message, and once the runner gave up on it, the healthy one does
        reply(ddb_client, table, poison, "poison")
        wait_for(lambda: recorder.offers(lambda r: _text(r) == "poison") == [3], 10.0,
                 "runner tried the poison record three times")
        answer = reply(ddb_client, table, healthy, "still alive")
        # THEN the healthy conversation moves: the runner kept going after the exceptions
        wait_for(lambda: both_show(ddb_client, table, healthy, answer), 5.0, "healthy rows moved")
        assert runner.running
    finally:
        runner.stop()
    assert not runner.running
    # AND each poison record was offered exactly max_attempts times, however the records were batched
    poison_offers = recorder.offers(lambda r: r["dynamodb"]["Keys"]["pk"]["S"] == poison_pk)
    assert len(poison_offers) == 2 and set(poison_offers) == {3}
    assert runner.stats["dropped"] >= 2
    assert recorder.offers(lambda r: _text(r) == "still alive") == [1]


def _text(record: dict) -> str | None:
    """The text of a message record (None for other items: rows carry a message text too)."""
    if not record["dynamodb"]["Keys"]["pk"]["S"].startswith(ddb.MESSAGE_PREFIX):
        return None
    return record["dynamodb"].get("NewImage", {}).get("message", {}).get("S")


def test_only_reported_records_are_retried_in_lambdas_event_shape(ddb_client, config, conversation):
    # GIVEN a runner whose handler reports the first record of its first batch as failed
    table = fresh_table(ddb_client)
    convo = conversation(table)

    def fail(event: dict, n: int):
        if n == 1:
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["dynamodb"]["SequenceNumber"]}]}
        return None

    recorder = Recorder(stream_runner.lambda_handler(ddb_client, table), fail)
    runner = own_runner(config, table, recorder)
    try:
        # WHEN the stream holds the conversation's first writes
        wait_for(lambda: len(recorder.calls) >= 2, 5.0, "a retry")
    finally:
        runner.stop()
    # THEN the retry carries exactly the reported record
    first, retry = recorder.calls[0]["Records"], recorder.calls[1]["Records"]
    assert len(first) >= 2
    assert retry == [first[0]]
    # AND the records look like what Lambda passes a function
    record = first[0]
    assert record["eventSource"] == "aws:dynamodb" and record["eventName"] == "INSERT"
    assert record["eventSourceARN"].startswith(f"arn:aws:dynamodb:ddblocal:000000000000:table/{table}/stream/")
    data = record["dynamodb"]
    assert set(data) >= {"Keys", "NewImage", "SequenceNumber", "SizeBytes", "StreamViewType",
                         "ApproximateCreationDateTime"}
    assert isinstance(data["ApproximateCreationDateTime"], float)
    keys = {r["dynamodb"]["Keys"]["pk"]["S"] for r in first}
    assert ddb.MESSAGE_PREFIX + convo["group"] in keys


def test_runner_follows_a_table_that_was_deleted_and_created_again(ddb_client, config, conversation):
    table = fresh_table(ddb_client)
    runner = own_runner(config, table, Recorder(stream_runner.lambda_handler(ddb_client, table)))
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a runner following a table
    try:
        wait_for(lambda: runner.stream_arn is not None, 3.0, "runner attached")
        first_arn = runner.stream_arn
        # WHEN the table is replaced (a new stream) and a conversation continues there
        messages.delete()
        messages.create()
        convo = conversation(table)
        answer = reply(ddb_client, table, convo, "on the new stream")
        # THEN the runner finds the new stream and moves the rows
        wait_for(lambda: both_show(ddb_client, table, convo, answer), 5.0, "rows moved on the new stream")
        assert runner.stream_arn != first_arn
    finally:
        runner.stop()
        messages.delete()


def test_runner_survives_a_dynamodb_local_restart(tmp_path, config):
    # GIVEN a DynamoDB Local of our own with persistent data, a table and a runner following it
    port = local_services.free_port()
    db_path, log_path = tmp_path / "ddb", tmp_path / "ddb.log"
    service = local_services.start_dynamodb_local(port, db_path, log_path)
    runner = None
    try:
        local = config.replace(aws_endpoint_url=service.url)
        messages = messages_table(local)
        client, table = messages.client, messages.name
        messages.create()
        a, b = ({"uuid": str(uuid.uuid4()), "handle": f"h{n}", "display_name": f"P{n}"} for n in (1, 2))
        first = messages.create_message_group(sender=a, receiver=b, message="before the restart")
        convo = {"group": first["message_group_uuid"], "a": a, "b": b}
        runner = stream_runner.start_thread(local, **FAST)
        answer = reply(client, table, convo, "answer 1")
        wait_for(lambda: both_show(client, table, convo, answer), 3.0, "rows moved before the restart")
        # WHEN DynamoDB Local stops for a while and comes back on the same port with the same data
        service.stop()
        wait_for(lambda: runner.stats["reconnects"] >= 2, 5.0, "runner noticed the outage")
        service = local_services.start_dynamodb_local(port, db_path, log_path)
        answer = reply(client, table, convo, "answer 2")
        # THEN the runner reconnects and moves the rows to the new message
        wait_for(lambda: both_show(client, table, convo, answer), 5.0, "rows moved after the restart")
        assert runner.running
    finally:
        if runner:
            runner.stop()
        service.stop()


def test_bin_script_processes_messages_and_stops_cleanly_on_sigterm(script_env, ddb_client, config, conversation):
    # GIVEN bin/ddb/stream-runner running against a fresh table of the session's DynamoDB Local
    table = fresh_table(ddb_client)
    messages = ddb.MessagesTable(ddb_client, table)
    env = {**script_env, "DDB_MESSAGE_TABLE": table}
    process = subprocess.Popen([str(ROOT / "bin" / "ddb" / "stream-runner"), "--idle-poll", "0.1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        convo = conversation(table)
        answer = reply(ddb_client, table, convo, "via the script")
        # WHEN a message lands
        wait_for(lambda: both_show(ddb_client, table, convo, answer), 8.0, "rows moved by the script")
        # AND the script gets SIGTERM
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        messages.delete()
    # THEN it exits 0, having logged its batches and its stop
    assert process.returncode == 0, output
    assert "stream batch:" in output
    assert "stream runner: stopped" in output


def sequence_numbers(recorder: Recorder) -> set[str]:
    return {r["dynamodb"]["SequenceNumber"] for call in recorder.calls for r in call["Records"]}


def run_until_moved(ddb_client, config, table: str, convo: dict, text: str,
                    checkpoints: stream_runner.Checkpoints) -> tuple[Recorder, str]:
    """Run a runner on these positions until a reply with `text` moved both rows; return its calls and stream."""
    recorder = Recorder(stream_runner.lambda_handler(ddb_client, table))
    runner = own_runner(config, table, recorder, checkpoints=checkpoints)
    try:
        answer = reply(ddb_client, table, convo, text)
        wait_for(lambda: both_show(ddb_client, table, convo, answer), 30.0, f"rows moved to {text!r}")
    finally:
        runner.stop()
    return recorder, runner.stream_arn


def test_a_restarted_runner_resumes_after_the_last_processed_record(ddb_client, config, conversation):
    # GIVEN a runner that processed a conversation's records and stopped, keeping its positions in memory
    table = fresh_table(ddb_client)
    convo = conversation(table)
    checkpoints = stream_runner.Checkpoints()
    first, _arn = run_until_moved(ddb_client, config, table, convo, "before the restart", checkpoints)
    # WHEN a new runner starts from those positions and a new message lands
    second, _arn = run_until_moved(ddb_client, config, table, convo, "after the restart", checkpoints)
    # THEN it got the new records only: nothing the first runner had processed was delivered again
    # (a shard is read in order, so the new message could not have come before a replay)
    assert sequence_numbers(second) and not sequence_numbers(second) & sequence_numbers(first)
    assert any(r["dynamodb"]["NewImage"].get("message", {}).get("S") == "after the restart"
               for call in second.calls for r in call["Records"] if "NewImage" in r["dynamodb"])


def test_positions_kept_in_a_file_carry_over_to_a_new_process(ddb_client, config, conversation, tmp_path):
    # GIVEN a runner keeping its positions in a file, stopped after a conversation's records
    table = fresh_table(ddb_client)
    convo = conversation(table)
    state = tmp_path / "positions.json"
    first, arn = run_until_moved(ddb_client, config, table, convo, "kept in a file", stream_runner.Checkpoints(state))
    # WHEN the file is read afresh (as a restarted bin/dev does) by a new runner
    saved = stream_runner.Checkpoints(state)
    assert saved.positions(arn) and saved.positions("arn:of:another:stream") == {}
    second, _arn = run_until_moved(ddb_client, config, table, convo, "next", saved)
    # THEN nothing was delivered twice
    assert sequence_numbers(second) and not sequence_numbers(second) & sequence_numbers(first)


def test_info_logs_one_summary_line_per_interval_not_one_per_batch(ddb_client, config, conversation, caplog):
    # GIVEN a runner whose summary interval is longer than the test
    table = fresh_table(ddb_client)
    convo = conversation(table)
    caplog.set_level(logging.INFO, logger=stream_runner.log.name)
    runner = own_runner(config, table, Recorder(stream_runner.lambda_handler(ddb_client, table)),
                        summary_interval=3600)
    try:
        # WHEN several batches are processed
        for n in range(3):
            answer = reply(ddb_client, table, convo, f"batch {n}")
            wait_for(lambda a=answer: both_show(ddb_client, table, convo, a), 30.0, f"batch {n} moved")
        assert runner.stats["batches"] >= 3
        assert not [r for r in caplog.records if r.getMessage().startswith("stream batch:")]
    finally:
        runner.stop()
    # THEN stopping logs the one summary line, with every record counted
    summaries = [r for r in caplog.records if r.getMessage().startswith("stream batch:")]
    assert len(summaries) == 1 and summaries[0].levelno == logging.INFO
    assert f"{runner.stats['records']} records in {runner.stats['batches']} handler calls" in summaries[0].getMessage()
