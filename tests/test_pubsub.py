"""lib/pubsub.py: publish and subscribe over the session's real Postgres (LISTEN/NOTIFY), in this process.

A subscription that must receive something is waited on (bounded); one that
must NOT is shown to be empty after a later event, published after the one it
must not get, has reached it.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from backend_flask.lib.db import Db, make_pool
from backend_flask.lib.errors import DatabaseUnavailable
from backend_flask.lib.pubsub import GAP, LISTENER_NAME, MAILBOX_SIZE, MAX_NOTIFY_BYTES, Bus, Event
from backend_flask.services.events import from_micros
from toolbox import local_services

WAIT = 30.0


def event(kind: str = "message", to=(), group: str | None = None, at: str | None = None, **data) -> Event:
    return Event(kind, at or from_micros(int(time.time() * 1e6)), group or str(uuid.uuid4()), tuple(to),
                 {"n": uuid.uuid4().hex, **data})


def wait_event(subscription, wanted=None):
    """Return the next event (not GAP) the subscription gets, within WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        item, _ = subscription.get(deadline - time.monotonic())
        if item is not None and item is not GAP and (wanted is None or item.data["n"] == wanted.data["n"]):
            return item
    raise AssertionError("no event came")


def test_an_event_reaches_its_recipients_and_nobody_else(bus):
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    with bus.subscribe(me) as mine, bus.subscribe(other) as theirs:
        # WHEN an event for me is published, then one for the other user
        for_me, for_them = event(to=[me]), event(to=[other])
        bus.publish([for_me])
        bus.publish([for_them])
        # THEN each gets their own; once the other's came, mine was never going to reach them
        assert wait_event(mine).data == for_me.data
        assert wait_event(theirs).data == for_them.data
        assert theirs.get(0)[0] is None


def test_events_too_big_for_a_notification_travel_by_reference(bus):
    me = str(uuid.uuid4())
    big = event(to=[me], text="\U0001f600" * 2100)
    assert len(str(big.data).encode()) > MAX_NOTIFY_BYTES
    with bus.subscribe(me) as mine:
        bus.publish([big])
        assert wait_event(mine).data == big.data


def test_one_publish_is_one_conversation(bus):
    with pytest.raises(ValueError):
        bus.publish([event(), event()])


def test_activity_names_the_users_conversations_after_a_time(bus):
    # GIVEN publishes to me in two conversations, one of them twice, and one to someone else
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    times = [from_micros(int((time.time() + n) * 1e6)) for n in range(4)]
    bus.publish([event(to=[me, other], group=first, at=times[0])])
    bus.publish([event(to=[me], group=first, at=times[2])])
    bus.publish([event("read", to=[me], group=second, at=times[1])])
    bus.publish([event(to=[other], group=str(uuid.uuid4()), at=times[3])])
    # THEN my activity after the first publish names both conversations at their newest position, and reads
    assert bus.activity(me, times[0]) == {first: {"position": times[2], "read": None},
                                          second: {"position": times[1], "read": times[1]}}
    assert bus.activity(me, times[2]) == {}


def test_prune_forgets_publishes_older_than_the_window(bus, pg_url):
    # GIVEN a publish to me two hours old and one just now, to someone else
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    bus.publish([event(to=[me])])
    bus.publish([event(to=[other])])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE realtime_events SET published_at = now() - interval '2 hours' "
                     "WHERE user_uuids @> ARRAY[%s::uuid]", (me,))
    # WHEN a process prunes with a one-hour window
    assert bus.prune() >= 1
    # THEN the old one is gone and the new one stays
    since = "2000-01-01T00:00:00.000000+00:00"
    assert bus.activity(me, since) == {} and len(bus.activity(other, since)) == 1


def test_a_lost_listen_connection_tells_every_stream_to_replay_then_listens_again(bus, pg_url):
    me = str(uuid.uuid4())
    with bus.subscribe(me) as mine:
        reconnects = bus.reconnects
        # WHEN Postgres ends the LISTEN connection
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name = %s", (LISTENER_NAME,)).fetchone()[0] >= 1
        # THEN the subscription is told GAP once the listener is back ...
        deadline = time.monotonic() + WAIT
        item = None
        while item is not GAP and time.monotonic() < deadline:
            item, _ = mine.get(deadline - time.monotonic())
        assert item is GAP and bus.reconnects > reconnects
        # ... and live events flow again
        after = event(to=[me])
        bus.publish([after])
        assert wait_event(mine, after).data == after.data


def test_a_mailbox_that_overflows_is_told_to_replay(bus):
    me = str(uuid.uuid4())
    with bus.subscribe(me) as mine:
        for _ in range(MAILBOX_SIZE + 1):
            mine.put(event(to=[me]))
        item, _ = mine.get(0)
        assert item is GAP and mine.get(0)[0] is None


def test_without_postgres_subscribe_and_publish_are_503s(pg_url):
    dead_url = f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/nothing"
    pool = make_pool(dead_url, min_size=0, max_size=1, timeout=1.0)
    pool.open(wait=False)
    dead = Bus(Db(pool), dead_url, timeout=1.0)
    try:
        with pytest.raises(DatabaseUnavailable):
            dead.subscribe(str(uuid.uuid4()))
        with pytest.raises(DatabaseUnavailable):
            dead.publish([event(to=[str(uuid.uuid4())])])
    finally:
        dead.close()
        pool.close()
