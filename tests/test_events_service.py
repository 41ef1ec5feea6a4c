"""services/events.py in this process: event ids (cursors), replay from the table, publishing.

Replay tests use a table of their own, which no stream runner follows: pattern E
moves its rows only when a test says so, so "the row has not moved yet" is a
fact, not a race.
"""

from __future__ import annotations

import time
import uuid

import pytest

from backend_flask.lib import ddb
from backend_flask.lib.db import Db, make_pool
from backend_flask.lib.pubsub import GAP, Bus, Event
from backend_flask.services import events
from backend_flask.services.events import MAX_SEEN, PUBLISH_BOUND_SECONDS, Cursor, from_micros, micros, position
from toolbox import local_services

WAIT = 30.0
LONG_AGO = "2020-01-01T00:00:00.000000+00:00"


@pytest.fixture(scope="module")
def quiet_table(ddb_client) -> ddb.MessagesTable:
    """A table of this module's own: no stream runner moves its rows."""
    table = ddb.MessagesTable(ddb_client, f"events-{uuid.uuid4().hex[:8]}")
    table.create()
    yield table
    table.delete()


def person(name: str) -> dict:
    return {"uuid": str(uuid.uuid4()), "handle": f"{name}{uuid.uuid4().hex[:6]}", "display_name": name.title()}


def started(table: ddb.MessagesTable) -> tuple[dict, dict, str, Cursor]:
    """Ann writes Bob a first message; return Ann, Bob, the conversation and a cursor right after that message."""
    a, b = person("ann"), person("bob")
    first = table.create_message_group(sender=a, receiver=b, message="first")
    return a, b, first["message_group_uuid"], Cursor(micros(first["created_at"]))


def next_event(subscription) -> Event:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        item, _ = subscription.get(deadline - time.monotonic())
        if item is not None and item is not GAP:
            return item
    raise AssertionError("no event came")


# ------------------------------------------------------------------ cursors

def test_a_cursor_survives_its_id():
    cursor = Cursor(micros("2026-11-22T08:03:06.000000+00:00"))
    cursor.add((cursor.watermark + 5, "m", "0123abcd"))
    cursor.add((cursor.watermark + 5, "g", "0123abcd"))
    assert Cursor.decode(cursor.encode()) == Cursor(cursor.watermark, set(cursor.seen))


@pytest.mark.parametrize("value", ["", "garbage", "2.1a", "1.", "1.zz", "1.1a.5x0123abcd", "1.1a.5m0123abc",
                                   "1.1a" + ".1m0123abcd" * (MAX_SEEN + 1), None])
def test_an_id_that_is_not_a_cursor_decodes_to_none(value):
    assert Cursor.decode(value) is None


def test_a_cursor_knows_what_it_delivered_and_forgets_what_its_watermark_covers():
    cursor = Cursor(1_000_000)
    early, late = (900_000, "m", "aaaaaaaa"), (1_500_000, "m", "aaaaaaaa")
    assert cursor.delivered(early) and not cursor.wants(early)
    assert not cursor.delivered(late) and cursor.wants(late)
    cursor.add(late)
    assert cursor.delivered(late) and not cursor.wants(late)
    # WHEN the watermark passes it, THEN the id no longer lists it, and it still counts as delivered
    assert cursor.advance_to(2_000_000)
    assert cursor.seen == set() and cursor.delivered(late)
    assert not cursor.advance_to(1_000)


def test_a_new_stream_takes_late_events_from_just_before_it_opened_until_its_watermark_moves():
    now = time.time()
    cursor = Cursor.opened(now)
    just_before = (int((now - PUBLISH_BOUND_SECONDS / 2) * 1e6), "m", "bbbbbbbb")
    assert cursor.wants(just_before) and cursor.delivered(just_before)  # live yes, replay no
    cursor.add(just_before)
    assert not cursor.wants(just_before)
    cursor.advance(now + PUBLISH_BOUND_SECONDS + 1)
    assert not cursor.wants((just_before[0] + 1, "m", "bbbbbbbb"))


def test_a_cursor_lists_at_most_max_seen_positions_forgetting_the_oldest():
    cursor = Cursor(0)
    for n in range(1, MAX_SEEN + 6):
        cursor.add((n, "m", "cccccccc"))
    assert len(cursor.seen) == MAX_SEEN and min(cursor.seen)[0] == 6
    assert Cursor.decode(cursor.encode()) is not None


# ------------------------------------------------------------------ replay

def test_replay_finds_a_message_whose_row_pattern_e_has_not_moved_yet(bus, quiet_table):
    # GIVEN a conversation, an id from before a new message, and the message published (rows not moved)
    a, b, group, cursor = started(quiet_table)
    second = quiet_table.create_message(message_group_uuid=group, sender=a, message="second")
    events.publish_message(bus, quiet_table, message={"message_group_uuid": group, **second}, sender=a)
    assert quiet_table.list_message_groups(b["uuid"], limit=1)["items"][0]["message"] == "first"
    # WHEN b replays
    replayed = events.replay(bus, quiet_table, b["uuid"], cursor)
    # THEN b gets the message, and the row as pattern E will leave it
    assert [(e.kind, e.data.get("message")) for e in replayed] == [("message", "second"), ("message_group", "second")]
    assert replayed[0].data == {"message_group_uuid": group, **second}
    assert replayed[1].data == {"uuid": group, "display_name": "Ann", "handle": a["handle"], "message": "second",
                                "created_at": second["created_at"], "unread_count": 1,
                                "peer_last_read_at": replayed[1].data["peer_last_read_at"]}


def test_replay_finds_a_message_that_was_never_published_once_its_row_moved(bus, quiet_table):
    # GIVEN a message written without a publish (its writer died), and pattern E run for it
    a, b, group, cursor = started(quiet_table)
    lost = quiet_table.create_message(message_group_uuid=group, sender=b, message="never published")
    quiet_table.move_message_groups(group, lost["created_at"], lost["message"])
    # THEN both members' replays have it, through their rows
    for member in (a, b):
        replayed = events.replay(bus, quiet_table, member["uuid"], cursor)
        assert [e.data["uuid"] for e in replayed if e.kind == "message"] == [lost["uuid"]]


def test_replay_leaves_out_what_the_cursor_has_and_what_is_not_the_users(bus, quiet_table):
    # GIVEN two messages published to a and b, and a cursor that has the first
    a, b, group, cursor = started(quiet_table)
    outsider = person("eve")
    sent = []
    for text in ("one", "two"):
        created = quiet_table.create_message(message_group_uuid=group, sender=a, message=text)
        events.publish_message(bus, quiet_table, message={"message_group_uuid": group, **created}, sender=a)
        sent.append(created)
    cursor.add(position(events.message_event(group, sent[0], [b["uuid"]])))
    # THEN b's replay holds only the second message and the row, and the outsider's nothing
    replayed = events.replay(bus, quiet_table, b["uuid"], cursor)
    assert [(e.kind, e.data["message"]) for e in replayed] == [("message", "two"), ("message_group", "two")]
    assert events.replay(bus, quiet_table, outsider["uuid"], Cursor(micros(LONG_AGO))) == []


def test_replay_of_too_much_gives_up(bus, quiet_table):
    a, b, group, cursor = started(quiet_table)
    for n in range(events.MAX_REPLAY_MESSAGES + 1):
        quiet_table.create_message(message_group_uuid=group, sender=a, message=f"m{n}")
    quiet_table.move_message_groups(group, ddb.now_iso(), "last")
    assert events.replay(bus, quiet_table, b["uuid"], cursor) is None


# ------------------------------------------------------------------ publishing

def test_publish_message_sends_the_message_to_both_and_each_their_row(bus, quiet_table):
    a, b = person("ann"), person("bob")
    with bus.subscribe(a["uuid"]) as to_a, bus.subscribe(b["uuid"]) as to_b:
        first = quiet_table.create_message_group(sender=a, receiver=b, message="hi")
        events.publish_message(bus, quiet_table, message=first, sender=a, receiver=b)
        for subscription, other in ((to_a, b), (to_b, a)):
            got = [next_event(subscription), next_event(subscription)]
            assert [e.kind for e in got] == ["message", "message_group"]
            assert got[1].data["handle"] == other["handle"] and got[1].data["message"] == "hi"


def test_publish_read_tells_the_peer_and_sends_the_rows_given(bus, quiet_table):
    # GIVEN a conversation, and both members listening
    a, b = person("ann"), person("bob")
    first = quiet_table.create_message_group(sender=a, receiver=b, message="hi")
    group = first["message_group_uuid"]
    rows = {k[len(ddb.GROUP_PREFIX):]: v for k, v in quiet_table.group_rows(group).items()}
    read_at = ddb.now_iso()
    with bus.subscribe(a["uuid"]) as to_a, bus.subscribe(b["uuid"]) as to_b:
        # WHEN b reads
        events.publish_read(bus, message_group_uuid=group, reader=b, last_read_at=read_at,
                            members=[a["uuid"], b["uuid"]], rows={b["uuid"]: rows[b["uuid"]]})
        # THEN a is told b read it, and b gets their own row (not a read event about themselves)
        told = next_event(to_a)
        assert (told.kind, told.data) == ("read", {"message_group_uuid": group, "handle": b["handle"],
                                                   "last_read_at": read_at})
        mine = next_event(to_b)
        assert mine.kind == "message_group" and mine.data["uuid"] == group
        assert to_a.get(0)[0] is None


def test_publishing_without_postgres_never_fails_the_write(quiet_table, caplog):
    dead_url = f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/nothing"
    pool = make_pool(dead_url, min_size=0, max_size=1, timeout=1.0)
    pool.open(wait=False)
    dead = Bus(Db(pool), dead_url, timeout=1.0)
    a, b = person("ann"), person("bob")
    try:
        first = quiet_table.create_message_group(sender=a, receiver=b, message="stored anyway")
        events.publish_message(dead, quiet_table, message=first, sender=a, receiver=b)
        events.publish_read(dead, message_group_uuid=first["message_group_uuid"], reader=b, last_read_at=ddb.now_iso(),
                            members=[a["uuid"], b["uuid"]])
    finally:
        dead.close()
        pool.close()
    assert "could not publish" in caplog.text


def test_from_micros_and_micros_agree():
    stamp = "2026-11-22T08:03:06.045123+00:00"
    assert from_micros(micros(stamp)) == stamp
