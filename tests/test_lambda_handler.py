"""The messaging-stream Lambda handler (pattern E) against the session's DynamoDB Local.

The records are built in Lambda's event shape with times and texts that were
never written to the table, so only the handler under test can have moved a
conversation row to them (not a stream runner following the same table).
"""

from __future__ import annotations

import uuid

import pytest

from backend_flask.lib import ddb
from toolbox import stream_runner

handler = stream_runner.load_handler_module()


def message_item(group: str, sk: str, text: str, sender: dict) -> dict:
    return {"pk": ddb.MESSAGE_PREFIX + group, "sk": sk, "message_uuid": str(uuid.uuid4()), "message": text,
            "user_uuid": sender["uuid"], "user_display_name": sender["display_name"],
            "user_handle": sender["handle"]}


def rows(client, table: str, person: dict, group: str) -> list[dict]:
    """The person's conversation rows of that group, as pattern B lists them."""
    messages = ddb.MessagesTable(client, table)
    page = messages.list_message_groups(person["uuid"], limit=100)
    return [row for row in page["items"] if row["uuid"] == group]


def assert_at(client, table: str, convo: dict, sk: str, text: str) -> None:
    for person in (convo["a"], convo["b"]):
        found = rows(client, table, person, convo["group"])
        assert [(r["created_at"], r["message"]) for r in found] == [(sk, text)]


def test_mixed_batch_acts_only_on_inserted_messages(ddb_client, config, conversation, stream_record):
    # GIVEN two conversations and a batch with one new message, plus MODIFY/REMOVE of messages
    # and INSERTs of other items, all dated after the conversations' last message
    table = config.ddb_message_table
    moved, untouched = conversation(), conversation()
    sk = ddb.now_iso()
    other = message_item(untouched["group"], sk, "not a new message", untouched["b"])
    batch = {"Records": [
        stream_record("MODIFY", other, "101"),
        stream_record("INSERT", message_item(moved["group"], sk, "the new one", moved["b"]), "102"),
        stream_record("REMOVE", other, "103"),
        stream_record("INSERT", {"pk": ddb.GROUP_PREFIX + untouched["a"]["uuid"], "sk": sk,
                                 "message_group_uuid": untouched["group"], "message": "a row"}, "104"),
        stream_record("INSERT", {"pk": ddb.MEMBER_PREFIX + untouched["group"], "sk": sk}, "105"),
        stream_record("INSERT", {"pk": ddb.IDEMPOTENCY_PREFIX + untouched["a"]["uuid"], "sk": sk,
                                 "message": "idem"}, "106"),
    ]}
    # WHEN the handler processes it
    result = handler.process_batch(batch, ddb.MessagesTable(ddb_client, table))
    # THEN nothing failed, the new message moved its conversation, the rest changed nothing
    assert result == {"batchItemFailures": []}
    assert_at(ddb_client, table, moved, sk, "the new one")
    first = untouched["first"]
    assert_at(ddb_client, table, untouched, first["created_at"], first["message"])


def test_only_the_failing_records_are_reported(ddb_client, config, conversation, stream_record):
    # GIVEN a batch where one message is too large for a conversation row (the write fails)
    # and one message item is malformed (its text is a number), between two good ones
    table = config.ddb_message_table
    good1, too_big, good2, malformed = (conversation() for _ in range(4))
    sk = ddb.now_iso()
    broken = message_item(malformed["group"], sk, "x", malformed["b"])
    broken["message"] = 42
    batch = {"Records": [
        stream_record("INSERT", message_item(good1["group"], sk, "good one", good1["b"]), "201"),
        stream_record("INSERT", message_item(too_big["group"], sk, "x" * 410_000, too_big["b"]), "202"),
        stream_record("INSERT", message_item(good2["group"], sk, "good two", good2["b"]), "203"),
        stream_record("INSERT", broken, "204"),
    ]}
    # WHEN the handler processes it
    result = handler.process_batch(batch, ddb.MessagesTable(ddb_client, table))
    # THEN exactly those two are reported, and the good ones moved anyway
    assert result == {"batchItemFailures": [{"itemIdentifier": "202"}, {"itemIdentifier": "204"}]}
    assert_at(ddb_client, table, good1, sk, "good one")
    assert_at(ddb_client, table, good2, sk, "good two")
    for convo in (too_big, malformed):
        assert_at(ddb_client, table, convo, convo["first"]["created_at"], convo["first"]["message"])


def test_batch_delivered_twice_changes_nothing_the_second_time(ddb_client, config, conversation, stream_record):
    # GIVEN a batch with new messages of two conversations, already processed once
    table = config.ddb_message_table
    messages = ddb.MessagesTable(ddb_client, table)
    one, two = conversation(), conversation()
    sk = ddb.now_iso()
    batch = {"Records": [stream_record("INSERT", message_item(one["group"], sk, "again 1", one["a"]), "301"),
                         stream_record("INSERT", message_item(two["group"], sk, "again 2", two["b"]), "302")]}
    assert handler.process_batch(batch, ddb.MessagesTable(ddb_client, table)) == {"batchItemFailures": []}
    before = {p["uuid"]: messages.list_message_groups(p["uuid"])["items"]
              for c in (one, two) for p in (c["a"], c["b"])}
    # WHEN Lambda delivers the same batch again
    result = handler.process_batch(batch, ddb.MessagesTable(ddb_client, table))
    # THEN it succeeds and every list is unchanged: one row per conversation, nothing duplicated
    assert result == {"batchItemFailures": []}
    after = {uid: messages.list_message_groups(uid)["items"] for uid in before}
    assert after == before
    assert_at(ddb_client, table, one, sk, "again 1")
    assert_at(ddb_client, table, two, sk, "again 2")


def test_newest_of_two_messages_in_one_batch_wins(ddb_client, config, conversation, stream_record):
    # GIVEN two new messages of one conversation, the newer one first in the batch
    table = config.ddb_message_table
    convo = conversation()
    older, newer = ddb.now_iso(), None
    while not newer or newer == older:
        newer = ddb.now_iso()
    batch = {"Records": [stream_record("INSERT", message_item(convo["group"], newer, "newer", convo["b"]), "401"),
                         stream_record("INSERT", message_item(convo["group"], older, "older", convo["a"]), "402")]}
    # WHEN the handler processes it, and later a batch with only the older one arrives
    assert handler.process_batch(batch, ddb.MessagesTable(ddb_client, table)) == {"batchItemFailures": []}
    late = {"Records": [batch["Records"][1]]}
    assert handler.process_batch(late, ddb.MessagesTable(ddb_client, table)) == {"batchItemFailures": []}
    # THEN both rows show the newer message: rows only ever move forward
    assert_at(ddb_client, table, convo, newer, "newer")


def test_batch_where_every_record_fails_raises(ddb_client, config, conversation, stream_record):
    # GIVEN a batch whose only record is malformed
    convo = conversation()
    item = message_item(convo["group"], ddb.now_iso(), "x", convo["a"])
    del item["message"]
    # WHEN / THEN the handler raises, so Lambda retries and bisects the whole batch (Powertools' contract)
    with pytest.raises(handler.BatchProcessingError):
        handler.process_batch({"Records": [stream_record("INSERT", item, "501")]},
                              ddb.MessagesTable(ddb_client, config.ddb_message_table))


def test_empty_batch_reports_no_failures(ddb_client, config):
    empty = handler.process_batch({"Records": []}, ddb.MessagesTable(ddb_client, config.ddb_message_table))
    assert empty == {"batchItemFailures": []}
