"""bin/ddb/* run as subprocesses against the session's DynamoDB Local (and Postgres for handles)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from backend_flask.config import ROOT
from backend_flask.lib import ddb
from toolbox import local_services

BIN = ROOT / "bin" / "ddb"


def run(script: str, *args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run bin/ddb/<script> and return its completed process (text output)."""
    return subprocess.run([str(BIN / script), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert the script failed with one line on stderr and no traceback; return that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def own_table(script_env, ddb_client):
    """An environment whose DDB_MESSAGE_TABLE names a table of this test only (not created)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    messages = ddb.MessagesTable(ddb_client, name)
    yield {**script_env, "DDB_MESSAGE_TABLE": name}
    messages.delete()


def test_schema_load_list_scan_and_drop_manage_a_table(own_table, ddb_client):
    table = own_table["DDB_MESSAGE_TABLE"]
    # schema-load creates the table with the GSI, the stream and TTL; a second run changes nothing
    created = run("schema-load", env=own_table)
    assert created.returncode == 0 and f"created table {table}" in created.stdout
    again = run("schema-load", env=own_table)
    assert again.returncode == 0 and "already exists" in again.stdout
    description = ddb_client.describe_table(TableName=table)["Table"]
    assert description["GlobalSecondaryIndexes"][0]["IndexName"] == ddb.GROUP_INDEX
    assert description["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    # list-tables shows it
    listed = run("list-tables", env=own_table)
    assert listed.returncode == 0 and table in listed.stdout.split()
    # scan prints items as JSON lines, and its cost
    for n in range(3):
        ddb_client.put_item(TableName=table, Item={"pk": {"S": f"TEST#{n}"}, "sk": {"S": "x"}, "n": {"N": str(n)}})
    scanned = run("scan", "--limit", "2", env=own_table)
    assert scanned.returncode == 0
    assert [json.loads(line)["pk"] for line in scanned.stdout.splitlines()] != []
    assert len(scanned.stdout.splitlines()) == 2 and "consumed capacity" in scanned.stderr
    # drop deletes it locally without asking; afterwards scan says so in one line
    dropped = run("drop", env=own_table)
    assert dropped.returncode == 0 and f"deleted table {table}" in dropped.stdout
    assert f"table {table} does not exist" in one_line_error(run("scan", env=own_table))


def test_seed_writes_the_demo_conversation_once_and_the_patterns_show_it(script_env, make_user, ddb_client,
                                                                          config):
    messages = ddb.MessagesTable(ddb_client, config.ddb_message_table)
    ann, bob = make_user(), make_user()
    handles = [ann["handle"], bob["handle"]]
    # WHEN seed runs twice for the pair
    first = run("seed", *handles, env=script_env)
    second = run("seed", *handles, env=script_env)
    # THEN the first writes the conversation and the second is a no-op
    assert first.returncode == 0 and "wrote the demo conversation" in first.stdout, first.stderr
    assert second.returncode == 0 and "nothing written" in second.stdout
    group = ddb.pair_group_uuid(ann["uuid"], bob["uuid"])
    # AND get-conversation shows its messages oldest first, with the capacity consumed
    shown = run("patterns/get-conversation", *handles, "--json", env=script_env)
    assert shown.returncode == 0, shown.stderr
    page = json.loads(shown.stdout)
    assert len(page["items"]) == 6 and page["items"][0]["handle"] == ann["handle"]
    assert page["consumed_capacity"][0]["CapacityUnits"] > 0
    text = run("patterns/get-conversation", "--group", group, "--limit", "2", env=script_env)
    assert text.returncode == 0 and "--before" in text.stdout and "consumed capacity" in text.stderr
    # AND list-conversations shows bob's conversation with ann at its last message
    listed = json.loads(run("patterns/list-conversations", bob["handle"], "--json", env=script_env).stdout)
    assert [(g["uuid"], g["handle"], g["message"]) for g in listed["items"]] == [
        (group, ann["handle"], page["items"][-1]["message"])]
    assert listed["consumed_capacity"]
    # AND unread-counts shows, in one Query, what each has not read: the demo alternates ann, bob, ...
    # and ends with bob's message, so ann has one unread and bob none (sending marks read)
    for who, count in ((ann, 1), (bob, 0)):
        unread = json.loads(run("patterns/unread-counts", who["handle"], "--json", env=script_env).stdout)
        assert [(g["uuid"], g["unread_count"]) for g in unread["items"]] == [(group, count)]
        assert len(unread["consumed_capacity"]) == 1
    text = run("patterns/unread-counts", bob["handle"], env=script_env)
    assert text.returncode == 0 and ann["handle"] in text.stdout and "consumed capacity" in text.stderr
    # AND seed --messages adds a large, older history in batches, with a progress bar on stderr
    bulk = run("seed", *handles, "--messages", "130", env=script_env)
    assert bulk.returncode == 0 and "wrote 130 messages" in bulk.stdout, bulk.stderr
    assert "seeding [" in bulk.stderr and "130/130" in bulk.stderr
    assert count_messages(ddb_client, config.ddb_message_table, group) == 136
    latest = messages.list_messages(group, limit=6)["items"]
    assert [m["message"] for m in latest] == [m["message"] for m in page["items"]]


def count_messages(client, table: str, group: str) -> int:
    """How many message items the conversation has."""
    return client.query(TableName=table, KeyConditionExpression="pk = :pk", Select="COUNT", ConsistentRead=True,
                        ExpressionAttributeValues={":pk": {"S": f"MSG#{group}"}})["Count"]


def test_seed_messages_is_resumable_and_never_adds_the_history_twice(script_env, make_user, ddb_client, config):
    table = config.ddb_message_table
    ann, bob = make_user(), make_user()
    handles = [ann["handle"], bob["handle"]]
    group = ddb.pair_group_uuid(ann["uuid"], bob["uuid"])
    # GIVEN a seeded history of 100 messages (plus the 6 of the demo conversation)
    first = run("seed", *handles, "--messages", "100", env=script_env)
    assert first.returncode == 0 and "wrote 100 messages" in first.stdout, first.stderr
    history = sorted(item["sk"]["S"] for item in ddb_client.query(
        TableName=table, KeyConditionExpression="pk = :pk", ConsistentRead=True,
        ExpressionAttributeValues={":pk": {"S": f"MSG#{group}"}})["Items"])[:100]
    # WHEN the same command runs again
    again = run("seed", *handles, "--messages", "100", env=script_env)
    # THEN it writes nothing and the conversation still has 106 messages, not 206
    assert again.returncode == 0 and "wrote 0 messages" in again.stdout and "(100 were there already)" in again.stdout
    assert count_messages(ddb_client, table, group) == 106
    # GIVEN an interrupted load: 37 messages of the history missing
    for sk in history[10:47]:
        ddb_client.delete_item(TableName=table, Key={"pk": {"S": f"MSG#{group}"}, "sk": {"S": sk}})
    # WHEN it runs again
    resumed = run("seed", *handles, "--messages", "100", env=script_env)
    # THEN it writes exactly the missing ones back, with the same keys
    assert resumed.returncode == 0 and "wrote 37 messages" in resumed.stdout, resumed
    assert "(63 were there already)" in resumed.stdout and "100/100" in resumed.stderr
    assert count_messages(ddb_client, table, group) == 106
    restored = sorted(item["sk"]["S"] for item in ddb_client.query(
        TableName=table, KeyConditionExpression="pk = :pk", ConsistentRead=True,
        ExpressionAttributeValues={":pk": {"S": f"MSG#{group}"}})["Items"])[:100]
    assert restored == history
    # AND a longer history extends the existing one
    longer = run("seed", *handles, "--messages", "150", env=script_env)
    assert longer.returncode == 0 and "wrote 50 messages" in longer.stdout
    assert count_messages(ddb_client, table, group) == 156


def test_seeding_uses_its_own_patient_client_not_the_apis_timeouts(config):
    from toolbox import seed

    # GIVEN the API's settings (2 s x 3 attempts by default)
    patient = seed.patient_table(config).client.meta.config
    # THEN bulk seeding waits longer per call and retries more than a request would
    assert patient.read_timeout >= 10 * config.ddb_timeout
    assert patient.retries["total_max_attempts"] > 3 * config.ddb_max_attempts


def test_an_error_after_the_progress_bar_is_printed_on_its_own_line():
    import io

    from toolbox.scripts.ddb_seed import ProgressBar

    # GIVEN a progress bar half drawn
    stream = io.StringIO()
    with pytest.raises(RuntimeError), ProgressBar(stream=stream) as bar:
        bar(50, 130)
        # WHEN seeding fails
        raise RuntimeError("Read timeout")
    # THEN the bar's line is ended, so the script's `error:` line starts a line of its own
    assert stream.getvalue() == "\rseeding [" + "#" * 11 + "." * 19 + "] 50/130\n"


def test_scan_refuses_prod_and_drop_prod_needs_confirmation(script_env):
    assert "refuses to run against prod" in one_line_error(run("scan", "prod", env=script_env))
    declined = run("drop", "prod", env=script_env, stdin="no\n")
    assert declined.returncode == 1 and "not confirmed; nothing deleted" in declined.stderr
    assert "Traceback" not in declined.stderr


def test_a_missing_endpoint_is_one_line(script_env):
    env = {**script_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{local_services.free_port()}",
           "DDB_MAX_ATTEMPTS": "1"}
    assert "DynamoDB unreachable" in one_line_error(run("list-tables", env=env))


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("seed", ["nosuchhandle1", "nosuchhandle2"], "no user with handle nosuchhandle1, nosuchhandle2"),
    ("patterns/get-conversation", ["--group", "not-a-uuid"], "is not a conversation id"),
    ("patterns/list-conversations", ["--user-uuid", str(uuid.uuid4()), "--before", "garbage"], "cursor"),
])
def test_bad_arguments_are_one_line(script_env, script, args, expected):
    assert expected in one_line_error(run(script, *args, env=script_env))


def test_a_malformed_command_line_shows_usage_without_traceback(script_env):
    result = run("seed", "a", "b", "c", env=script_env)
    assert result.returncode == 2 and "give two handles" in result.stderr and "Traceback" not in result.stderr


def test_scan_limit_asks_dynamodb_for_that_many_items_only(own_table, ddb_client):
    # GIVEN a table of 5 items
    table = own_table["DDB_MESSAGE_TABLE"]
    messages = ddb.MessagesTable(ddb_client, table)
    messages.create()
    for n in range(5):
        ddb_client.put_item(TableName=table, Item={"pk": {"S": f"TEST#{n}"}, "sk": {"S": "x"}})
    # WHEN scan runs with --limit 0, 1 and 3
    outputs = {n: run("scan", "--limit", str(n), env=own_table) for n in (0, 1, 3)}
    # THEN it prints exactly that many items (0 prints none, not one)
    assert {n: len(r.stdout.splitlines()) for n, r in outputs.items()} == {0: 0, 1: 1, 3: 3}
    assert all(r.returncode == 0 and f"items: {n};" in r.stderr for n, r in outputs.items())
    # AND each Scan call carries the number still wanted, so DynamoDB reads no full page
    sent: list[dict] = []

    def record(params, **_):
        sent.append(dict(params))

    ddb_client.meta.events.register("provide-client-params.dynamodb.Scan", record)
    try:
        assert len(list(messages.scan(limit=2))) == 2
        assert list(messages.scan(limit=0)) == []
    finally:
        ddb_client.meta.events.unregister("provide-client-params.dynamodb.Scan", record)
    assert [call.get("Limit") for call in sent] == [2]
    assert run("scan", "--limit", "-1", env=own_table).returncode == 2


@pytest.mark.parametrize("script", ["patterns/get-conversation", "patterns/list-conversations",
                                    "patterns/unread-counts"])
@pytest.mark.parametrize("limit", ["0", "101", "5000", "ten"])
def test_pattern_scripts_refuse_a_limit_outside_one_to_a_hundred(script_env, script, limit):
    # WHEN a pattern script gets a page size the API would refuse too
    result = run(script, "--limit", limit, env=script_env)
    # THEN it is a usage error naming the range, not a silently clamped page or a traceback
    assert result.returncode == 2, result
    assert "--limit" in result.stderr and "Traceback" not in result.stderr
    assert "1..100" in result.stderr or "not an integer" in result.stderr
