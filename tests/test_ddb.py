"""lib/ddb.py against the session's DynamoDB Local: patterns A–E, membership, idempotency, cursors."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_flask.lib import ddb
from backend_flask.lib.ddb import keys, writes
from backend_flask.lib.ddb.cursors import decode_cursor
from backend_flask.lib.errors import Conflict, InvalidCursor, NotFound
from tests.helpers import concurrently
from toolbox.capacity import consumed_capacity


@pytest.fixture
def table(config) -> str:
    """The session's messages table."""
    return config.ddb_message_table


def person(name: str = "user") -> dict:
    """A participant with a unique uuid (the table does not need Postgres)."""
    suffix = uuid.uuid4().hex[:8]
    return {"uuid": str(uuid.uuid4()), "display_name": f"{name.title()} {suffix}", "handle": f"{name}{suffix}"}


def partition(client, table: str, pk: str) -> list[dict]:
    """Every item of one partition, oldest first, read strongly consistent."""
    items, kwargs = [], {}
    while True:
        response = client.query(TableName=table, KeyConditionExpression="pk = :pk", ConsistentRead=True,
                                ExpressionAttributeValues={":pk": {"S": pk}}, **kwargs)
        items += [ddb.from_item(i) for i in response["Items"]]
        if "LastEvaluatedKey" not in response:
            return items
        kwargs = {"ExclusiveStartKey": response["LastEvaluatedKey"]}


def rows_of(client, table: str, owner: dict, group: str) -> list[dict]:
    """The owner's conversation rows of one group (exactly one when all is well)."""
    return [i for i in partition(client, table, f"GRP#{owner['uuid']}") if i["message_group_uuid"] == group]


def start(client, table: str, message: str = "hello") -> tuple[dict, dict, str]:
    """A fresh pair of users and their conversation."""
    messages = ddb.MessagesTable(client, table)
    a, b = person("ann"), person("bob")
    group = messages.create_message_group(sender=a, receiver=b, message=message)["message_group_uuid"]
    return a, b, group


def ts(days: float = 0, micro: int = 0) -> str:
    """A timestamp `days` after now, plus some microseconds."""
    return ddb.to_iso(datetime.now(timezone.utc) + timedelta(days=days, microseconds=micro))


# ---------------------------------------------------------------- pattern E

def test_move_brings_both_rows_to_the_new_message_and_is_idempotent(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a conversation and a newer message
    a, b, group = start(ddb_client, table)
    later = ts(days=1)
    # WHEN the same stream record is handled twice
    first = messages.move_message_groups(group, later, "second")
    again = messages.move_message_groups(group, later, "second")
    # THEN both rows moved once, and each owner has exactly one row with the new message
    assert (first, again) == (2, 0)
    for owner in (a, b):
        [row] = rows_of(ddb_client, table, owner, group)
        assert (row["sk"], row["message"], row["last_message_at"]) == (later, "second", later)


def test_move_only_goes_forward_when_records_arrive_out_of_order(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    newer, older = ts(days=2), ts(days=1)
    messages.move_message_groups(group, newer, "newest")
    # WHEN an older message's record arrives afterwards
    assert messages.move_message_groups(group, older, "older") == 0
    # THEN the rows still show the newest message
    for owner in (a, b):
        [row] = rows_of(ddb_client, table, owner, group)
        assert (row["sk"], row["message"]) == (newer, "newest")


def test_concurrent_moves_leave_one_row_per_owner_with_the_newest_message(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN 12 messages whose records are handled by 6 racing invocations, in random order, some twice
    a, b, group = start(ddb_client, table)
    records = [(ts(days=1, micro=i), f"m{i}") for i in range(12)]
    work = records + random.sample(records, 6)
    random.shuffle(work)

    def handle(chunk):
        for sk, text in chunk:
            messages.move_message_groups(group, sk, text)

    concurrently(handle, [(work[i::6],) for i in range(6)])
    # THEN no error, and each owner has exactly one row, at the newest message
    newest_sk, newest_text = max(records)
    for owner in (a, b):
        [row] = rows_of(ddb_client, table, owner, group)
        assert (row["sk"], row["message"]) == (newest_sk, newest_text)


def test_a_stale_view_of_a_row_cannot_move_or_duplicate_it(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a handler that saw a row at its old position (a lagging GSI) after it had moved
    a, _b, group = start(ddb_client, table)
    [stale] = rows_of(ddb_client, table, a, group)
    messages.move_message_groups(group, ts(days=1), "moved")
    # WHEN it tries to move the row from where it saw it
    later = ts(days=2)
    moved = messages.move_row(group, stale, {**stale, "message": "from stale view", "last_message_at": later})
    # THEN the condition refuses, and the row is still single and where the first move put it
    assert moved is False
    [row] = rows_of(ddb_client, table, a, group)
    assert row["message"] == "moved"


def test_move_steps_aside_when_another_conversation_of_the_owner_sits_at_that_microsecond(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN ann's two conversations, and a message time at which ann's other row already sits
    a, b = person("ann"), person("bob")
    c = person("cy")
    g1 = messages.create_message_group(sender=a, receiver=b, message="to bob")["message_group_uuid"]
    g2 = messages.create_message_group(sender=a, receiver=c, message="to cy")["message_group_uuid"]
    when = ts(days=1)
    messages.move_message_groups(g2, when, "cy at when")
    # WHEN g1 moves to the same microsecond
    assert messages.move_message_groups(g1, when, "bob at when") == 2
    # THEN both of ann's rows exist; g1's sits one microsecond later but knows its true time
    [r1], [r2] = rows_of(ddb_client, table, a, g1), rows_of(ddb_client, table, a, g2)
    assert r2["sk"] == when and r2["message"] == "cy at when"
    assert r1["sk"] > when and r1["last_message_at"] == when and r1["message"] == "bob at when"
    listed = messages.list_message_groups(a["uuid"])["items"]
    assert {(g["uuid"], g["created_at"]) for g in listed} == {(g1, when), (g2, when)}
    # AND a later message of g1 at the row's bumped position still moves it forward
    assert messages.move_message_groups(g1, r1["sk"], "bob again") == 2
    [r1] = rows_of(ddb_client, table, a, g1)
    assert r1["message"] == "bob again"


def test_message_from_image_accepts_only_message_items():
    message = {"pk": {"S": "MSG#g"}, "sk": {"S": "2026-11-22T08:03:06.045123+00:00"}, "message": {"S": "hi"},
               "user_uuid": {"S": "u"}}
    assert ddb.message_from_image(message) == {"message_group_uuid": "g", "sk": message["sk"]["S"],
                                               "message": "hi", "sender": "u"}
    for pk in ("MBR#g", "GRP#u", "IDEM#u"):
        assert ddb.message_from_image({**message, "pk": {"S": pk}}) is None


# ---------------------------------------------------------------- pattern C

def test_new_conversation_writes_rows_membership_and_message_together(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b = person("ann"), person("bob")
    with consumed_capacity(ddb_client) as capacity:
        result = messages.create_message_group(sender=a, receiver=b, message="first")
    group = result["message_group_uuid"]
    assert group == ddb.pair_group_uuid(b["uuid"], a["uuid"])
    assert result["handle"] == a["handle"] and result["message"] == "first"
    [row_a], [row_b] = rows_of(ddb_client, table, a, group), rows_of(ddb_client, table, b, group)
    assert row_a["user_handle"] == b["handle"] and row_b["user_handle"] == a["handle"]
    assert [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")] == ["first"]
    assert messages.is_member(group, a["uuid"]) and messages.is_member(group, b["uuid"])
    assert capacity and all("CapacityUnits" in c for c in capacity)
    # Membership and message items stay out of the GSI, which holds exactly the two rows.
    indexed = ddb_client.query(TableName=table, IndexName=ddb.GROUP_INDEX,
                               KeyConditionExpression="message_group_uuid = :g",
                               ExpressionAttributeValues={":g": {"S": group}})["Items"]
    assert sorted(i["pk"]["S"] for i in indexed) == sorted([f"GRP#{a['uuid']}", f"GRP#{b['uuid']}"])


def test_new_conversation_writes_nothing_when_one_of_its_items_conflicts(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a conflicting item: only the receiver's membership of the pair's conversation
    a, b = person("ann"), person("bob")
    group = ddb.pair_group_uuid(a["uuid"], b["uuid"])
    ddb_client.put_item(TableName=table, Item={"pk": {"S": f"MBR#{group}"}, "sk": {"S": b["uuid"]}})
    # WHEN ann starts the conversation
    with pytest.raises(NotFound):
        messages.create_message_group(sender=a, receiver=b, message="first")
    # THEN none of its items was written
    assert rows_of(ddb_client, table, a, group) == [] and rows_of(ddb_client, table, b, group) == []
    assert partition(ddb_client, table, f"MSG#{group}") == []
    assert [i["sk"] for i in partition(ddb_client, table, f"MBR#{group}")] == [b["uuid"]]


def test_starting_a_conversation_twice_continues_the_first(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table, "first")
    # WHEN bob "starts" a conversation with ann
    again = messages.create_message_group(sender=b, receiver=a, message="reply")
    # THEN it is the same conversation, with both messages, and still one row each
    assert again["message_group_uuid"] == group and again["handle"] == b["handle"]
    assert [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")] == ["first", "reply"]
    assert len(rows_of(ddb_client, table, a, group)) == 1 and len(rows_of(ddb_client, table, b, group)) == 1


def test_both_people_starting_at_the_same_moment_get_one_conversation(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN 4 pairs, each pair's people starting their conversation from 2 threads each at once
    pairs = [(person("ann"), person("bob")) for _ in range(4)]
    barrier = threading.Barrier(16)

    def begin(sender, receiver, n):
        barrier.wait()
        return messages.create_message_group(sender=sender, receiver=receiver, message=f"hi {n}")

    results = concurrently(begin, [(s, r, f"{i}-{j}") for i, (a, b) in enumerate(pairs)
                                   for j, (s, r) in enumerate([(a, b), (b, a)] * 2)])
    # THEN every call succeeded, each pair has one conversation holding all 4 messages, one row per person
    for a, b in pairs:
        group = ddb.pair_group_uuid(a["uuid"], b["uuid"])
        assert sum(r["message_group_uuid"] == group for r in results) == 4
        assert len(partition(ddb_client, table, f"MSG#{group}")) == 4
        for owner in (a, b):
            assert len(partition(ddb_client, table, f"GRP#{owner['uuid']}")) == 1
        assert len(partition(ddb_client, table, f"MBR#{group}")) == 2


def test_a_conversation_with_oneself_is_a_programming_error(ddb_client, table):
    # The service answers 422 cannot_message_self first; the table refuses to write such a pair at all.
    messages = ddb.MessagesTable(ddb_client, table)
    a = person()
    with pytest.raises(ValueError):
        messages.create_message_group(sender=a, receiver=a, message="me")


# ---------------------------------------------------------------- pattern D

def test_messages_with_the_same_timestamp_both_survive(ddb_client, table, monkeypatch):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a clock that returns the same microsecond to both writers
    a, b, group = start(ddb_client, table)
    frozen = ts(days=1)
    monkeypatch.setattr(keys, "now_iso", lambda: frozen)
    monkeypatch.setattr(writes, "now_iso", lambda: frozen)
    # WHEN two messages are written
    m1 = messages.create_message(message_group_uuid=group, sender=a, message="one")
    m2 = messages.create_message(message_group_uuid=group, sender=b, message="two")
    # THEN both exist, the second one microsecond later
    assert m1["created_at"] == frozen and m2["created_at"] > frozen
    texts = [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")]
    assert texts[-2:] == ["one", "two"]


def test_a_stranger_is_not_a_member_and_the_check_writes_nothing(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    stranger = person("eve")
    assert messages.is_member(group, stranger["uuid"]) is False
    assert messages.is_member(group, a["uuid"]) and messages.is_member(group, b["uuid"])
    assert len(partition(ddb_client, table, f"MBR#{group}")) == 2


@pytest.mark.parametrize("group", ["", "not-a-uuid", "x" * 5000, str(uuid.uuid4())])
def test_unknown_or_malformed_groups_are_not_found(ddb_client, table, group):
    messages = ddb.MessagesTable(ddb_client, table)
    a = person()
    assert messages.is_member(group, a["uuid"]) is False


def test_twenty_writers_lose_no_message_and_paging_returns_each_once_in_order(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN 20 threads each appending 5 messages to one conversation
    a, b, group = start(ddb_client, table, "start")

    def write(n):
        for i in range(5):
            messages.create_message(message_group_uuid=group, sender=(a, b)[n % 2], message=f"t{n}-{i}")

    concurrently(write, [(n,) for n in range(20)])
    # WHEN pattern A pages backwards through the conversation, 7 at a time
    pages, cursor = [], None
    while True:
        page = messages.list_messages(group, limit=7, before=cursor)
        pages.append(page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    # THEN every message appears exactly once, oldest first within and across pages
    seen = [m for page in reversed(pages) for m in page]
    assert len(seen) == 101 and len({m["uuid"] for m in seen}) == 101
    assert [m["created_at"] for m in seen] == sorted(m["created_at"] for m in seen)
    assert seen[0]["message"] == "start"
    # and each writer's messages are in the order it wrote them
    for n in range(20):
        assert [m["message"] for m in seen if m["message"].startswith(f"t{n}-")] == [f"t{n}-{i}" for i in range(5)]


# ---------------------------------------------------------------- patterns A and B

def test_list_messages_returns_the_latest_page_oldest_first(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table, "m0")
    for i in range(1, 5):
        messages.create_message(message_group_uuid=group, sender=(a, b)[i % 2], message=f"m{i}")
    with consumed_capacity(ddb_client) as capacity:
        page = messages.list_messages(group, limit=3)
    assert [m["message"] for m in page["items"]] == ["m2", "m3", "m4"]
    assert set(page["items"][0]) == {"uuid", "display_name", "handle", "message", "created_at"}
    assert capacity and capacity[0]["TableName"] == table
    older = messages.list_messages(group, limit=3, before=page["next"])
    assert [m["message"] for m in older["items"]] == ["m0", "m1"] and older["next"] is None


def test_exactly_full_last_page_has_no_next_cursor(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    _a, _b, group = start(ddb_client, table)
    assert messages.list_messages(group, limit=1)["next"] is None


def test_conversations_are_listed_newest_first_including_last_years(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN ann's conversations whose last messages are from last year, last month and now
    ann = person("ann")
    others = [person("old"), person("mid"), person("new")]
    groups = []
    for other in others:
        groups.append(messages.create_message_group(sender=other, receiver=ann,
                                               message="hi")["message_group_uuid"])
    last_year = datetime(datetime.now(timezone.utc).year - 1, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    for group, when in zip(groups[:2], (last_year, datetime.now(timezone.utc) - timedelta(days=30)), strict=True):
        row = rows_of(ddb_client, table, ann, group)[0]
        ddb_client.delete_item(TableName=table, Key={"pk": {"S": row["pk"]}, "sk": {"S": row["sk"]}})
        ddb_client.put_item(TableName=table, Item=ddb.to_item({**row, "sk": ddb.to_iso(when),
                                                           "last_message_at": ddb.to_iso(when)}))
    # WHEN ann lists them two at a time
    first = messages.list_message_groups(ann["uuid"], limit=2)
    second = messages.list_message_groups(ann["uuid"], limit=2, before=first["next"])
    # THEN all three appear, newest first, last year's included, showing the other person
    listed = first["items"] + second["items"]
    assert [g["uuid"] for g in listed] == [groups[2], groups[1], groups[0]]
    assert listed[2]["created_at"] == ddb.to_iso(last_year) and listed[2]["handle"] == others[0]["handle"]
    assert second["next"] is None


# ---------------------------------------------------------------- idempotency

def test_retrying_with_the_same_idempotency_key_writes_once(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    first = messages.create_message(message_group_uuid=group, sender=a, message="once",
                               idempotency_key="key-1")
    retry = messages.create_message(message_group_uuid=group, sender=a, message="once",
                               idempotency_key="key-1")
    assert retry == first
    assert [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")].count("once") == 1
    # The same key from another sender is another request.
    other = messages.create_message(message_group_uuid=group, sender=b, message="once",
                               idempotency_key="key-1")
    assert other["uuid"] != first["uuid"]
    # The idempotency item stays out of the GSI: no top-level message_group_uuid.
    [idem] = partition(ddb_client, table, f"IDEM#{a['uuid']}")
    assert "message_group_uuid" not in idem and idem["expires_at"] > 0


def test_a_key_reused_for_another_message_is_a_conflict_not_a_silent_drop(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, _b, group = start(ddb_client, table)
    messages.create_message(message_group_uuid=group, sender=a, message="first", idempotency_key="k")
    # WHEN the same key comes back with other text
    with pytest.raises(Conflict) as raised:
        messages.create_message(message_group_uuid=group, sender=a, message="second",
                           idempotency_key="k")
    # THEN it is refused, and only the first message is stored
    assert raised.value.code == "idempotency_key_reused"
    assert [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")].count("second") == 0


def test_a_key_that_started_a_conversation_replays_when_the_retry_appends(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    # GIVEN a conversation started with a key, then the pair talking on
    a, b = person("ann"), person("bob")
    first = messages.create_message_group(sender=a, receiver=b, message="hi", idempotency_key="kc")
    messages.create_message(message_group_uuid=first["message_group_uuid"], sender=b, message="yo")
    # WHEN the start is retried (it now falls back to appending) THEN the first result comes back
    assert messages.create_message_group(sender=a, receiver=b, message="hi",
                                    idempotency_key="kc") == first


def test_retrying_a_new_conversation_with_the_same_key_writes_once(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b = person("ann"), person("bob")
    key = "k" * 300  # longer keys are hashed into the sort key
    first = messages.create_message_group(sender=a, receiver=b, message="hi", idempotency_key=key)
    retry = messages.create_message_group(sender=a, receiver=b, message="hi", idempotency_key=key)
    assert retry == first and "message_group_uuid" in first
    assert len(partition(ddb_client, table, f"MSG#{first['message_group_uuid']}")) == 1


def test_concurrent_retries_with_one_key_write_one_message(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, _b, group = start(ddb_client, table)
    barrier = threading.Barrier(6)

    def send():
        barrier.wait()
        return messages.create_message(message_group_uuid=group, sender=a, message="dup", idempotency_key="same")

    results = concurrently(send, [()] * 6)
    assert len(results) == 6 and len({r["uuid"] for r in results}) == 1
    assert len(partition(ddb_client, table, f"MSG#{group}")) == 2


# ---------------------------------------------------------------- cursors and limits

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("make", [
    lambda group: "garbage!!",
    lambda group: "",
    lambda group: "x" * 2000,
    lambda group: 12345,
    lambda group: _b64(b"not json"),
    lambda group: _b64(b"\xff\xfe"),
    lambda group: _b64(b"[1, 2]"),
    lambda group: _b64(f'{{"pk": "MSG#{group}"}}'.encode()),
    lambda group: _b64(b'{"pk": "GRP#someone", "sk": "2026-01-01T00:00:00.000000+00:00"}'),
    lambda group: _b64(f'{{"pk": "MSG#{group}", "sk": "DROP TABLE"}}'.encode()),
    lambda group: _b64(f'{{"pk": "MSG#{group}", "sk": "2026-01-01T00:00:00+00:00", "x": 1}}'.encode()),
], ids=["garbage", "empty", "huge", "number", "not-json", "not-utf8", "list", "no-sk", "wrong-pk",
        "bad-sk", "extra-key"])
def test_malformed_cursors_raise_invalid_cursor(ddb_client, table, make):
    messages = ddb.MessagesTable(ddb_client, table)
    _a, _b, group = start(ddb_client, table)
    with pytest.raises(InvalidCursor):
        messages.list_messages(group, before=make(group))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(_b64),
                 st.recursive(st.none() | st.text(max_size=5) | st.integers(),
                              lambda inner: st.lists(inner) | st.dictionaries(st.sampled_from(["pk", "sk"]), inner),
                              max_leaves=10).map(lambda v: _b64(json.dumps(v).encode()))))
def test_any_client_string_is_a_position_or_invalid_cursor(cursor):
    pk = "MSG#00000000-0000-0000-0000-000000000000"
    with contextlib.suppress(InvalidCursor):
        assert ddb.is_timestamp(decode_cursor(cursor, pk))


def test_a_cursor_of_one_conversation_is_refused_by_another(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    messages.create_message(message_group_uuid=group, sender=b, message="two")
    cursor = messages.list_messages(group, limit=1)["next"]
    _c, _d, other = start(ddb_client, table)
    with pytest.raises(InvalidCursor):
        messages.list_messages(other, before=cursor)
    with pytest.raises(InvalidCursor):
        messages.list_message_groups(a["uuid"], before=cursor)


@pytest.mark.parametrize("given", [1, 20, 100])
def test_a_limit_in_one_to_a_hundred_is_used_as_given(ddb_client, table, given):
    assert keys.check_limit(given) == given


@pytest.mark.parametrize("given", [None, 0, -5, 101, 10**9, "7", "ten", True, 1.5j, [3]])
def test_a_limit_the_caller_did_not_validate_is_a_value_error_not_a_silent_clamp(given):
    # The route answers 400 invalid_limit; the table never guesses what a caller meant.
    with pytest.raises(ValueError):
        keys.check_limit(given)


def test_timestamps_are_utc_fixed_width_with_microseconds():
    values = [ddb.now_iso() for _ in range(50)]
    assert all(len(v) == 32 and v.endswith("+00:00") and ddb.is_timestamp(v) for v in values)
    assert ddb.to_iso(datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=5)))) == "2024-12-31T19:00:00.000000+00:00"


def test_a_membership_found_is_remembered_and_a_missing_one_is_asked_again(ddb_client, table):
    # GIVEN a fresh table object (its own cache) and a conversation
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    stranger = person("eve")
    # WHEN a member is checked twice and a stranger twice
    with consumed_capacity(ddb_client) as calls:
        assert messages.is_member(group, a["uuid"]) and messages.is_member(group, a["uuid"])
    member_calls = len(calls)
    with consumed_capacity(ddb_client) as calls:
        assert not messages.is_member(group, stranger["uuid"])
        assert not messages.is_member(group, stranger["uuid"])
    # THEN the member cost one read, and the stranger is asked each time (a member may be added later)
    assert member_calls == 1
    assert len([c for c in calls if c.get("TableName") == table]) >= 2


def test_a_remembered_marker_follows_the_markers_this_process_writes(ddb_client, table):
    messages = ddb.MessagesTable(ddb_client, table)
    a, b, group = start(ddb_client, table)
    assert messages.membership(group, b["uuid"]) == {}
    first = messages.newest_message_time(group)
    assert messages.mark_read(group, b["uuid"], first) == first
    assert messages.membership(group, b["uuid"]) == {"last_read_at": first}
