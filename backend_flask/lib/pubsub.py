"""Fan-out of events to every API process, over Postgres LISTEN/NOTIFY.

A process that wrote something publishes it: one statement records the
publish in `realtime_events` (a replay's index of recent activity) and
NOTIFYs the channel. Every API process keeps one dedicated connection that
LISTENs, and a dispatcher (a thread: a greenlet under the gevent server)
hands each notification to the mailboxes of the subscriptions of its
recipients. A stream is then one mailbox and one waiting greenlet.

A notification carries the events themselves when they fit (NOTIFY allows
8000 bytes), else the id of the row that holds them. When the LISTEN
connection is lost, notifications sent meanwhile are lost too: after
reconnecting, the dispatcher puts GAP into every mailbox, and each stream
replays from the table what it may have missed (services/events.py).

No Flask here: the stream Lambda and the tools may import it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from backend_flask.lib.db import Db, connect_kwargs, one_line
from backend_flask.lib.ddb.keys import to_iso
from backend_flask.lib.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

CHANNEL = "cruddur_events"
LISTENER_NAME = "cruddur-events"
MAX_NOTIFY_BYTES = 7900          # Postgres refuses payloads of 8000 bytes or more
MAILBOX_SIZE = 500               # events a slow stream may fall behind before it must replay instead
QUIET_PING_SECONDS = 20.0        # with no notification for this long, check the connection is alive
PRUNE_SECONDS = 300.0            # how often a process forgets publishes older than the replay window
RECONNECT_MAX_SECONDS = 5.0


@dataclass(frozen=True)
class Event:
    """One event for some users: its kind (message, message_group, read), when it happened, its data."""

    kind: str
    time: str                    # the change's time, the table's fixed-width UTC timestamp
    message_group_uuid: str
    to: tuple[str, ...]          # user uuids
    data: dict = field(hash=False, compare=False)

    def as_json(self) -> dict:
        """Return the event as it travels in a notification."""
        return {"k": self.kind, "t": self.time, "g": self.message_group_uuid, "to": list(self.to), "d": self.data}

    @classmethod
    def from_json(cls, value: dict) -> Event:
        """Return an event read from a notification."""
        return cls(str(value["k"]), str(value["t"]), str(value["g"]), tuple(map(str, value["to"])), dict(value["d"]))


class Gap:
    """Put in a mailbox when events may have been lost (LISTEN reconnected, mailbox overflowed)."""

    def __repr__(self) -> str:
        return "GAP"


GAP = Gap()


class Subscription:
    """The mailbox of one stream: the events of one user, in the order this process heard them."""

    def __init__(self, bus: Bus, user_uuid: str):
        self.bus = bus
        self.user_uuid = user_uuid
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self.closed = False

    def put(self, item: Event | Gap) -> None:
        """Queue an event (or GAP); a mailbox that is full is emptied and told GAP instead."""
        with self._ready:
            if len(self._items) >= MAILBOX_SIZE:
                self._items.clear()
                item = GAP
            self._items.append((item, time.time()))
            self._ready.notify()

    def get(self, timeout: float) -> tuple[Event | Gap | None, float]:
        """Return the next event (or GAP) and when it arrived; (None, now) if none came within `timeout` s.

        The time is a horizon: every event that arrived before it has been returned.
        """
        with self._ready:
            if not self._items:
                self._ready.wait(max(0.0, timeout))
            if self._items:
                return self._items.popleft()
            return None, time.time()

    def close(self) -> None:
        """Stop receiving (the stream ended)."""
        if not self.closed:
            self.closed = True
            self.bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Bus:
    """This process's end of the channel: publish, subscribe, and the replay's activity index."""

    def __init__(self, db: Db, url: str, *, timeout: float = 3.0, keep_seconds: float = 3600.0,
                 channel: str = CHANNEL):
        self.db = db
        self.url = url
        self.timeout = timeout
        self.keep_seconds = keep_seconds
        self.channel = channel
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self.reconnects = 0

    # ------------------------------------------------------------ publish

    def publish(self, events: list[Event]) -> None:
        """Record the events of one conversation and notify every process; DatabaseUnavailable if it fails."""
        if not events:
            return
        group = events[0].message_group_uuid
        if any(e.message_group_uuid != group for e in events):
            raise ValueError("one publish carries the events of one conversation")
        body = json.dumps({"v": 1, "e": [e.as_json() for e in events]}, ensure_ascii=False, separators=(",", ":"))
        fits = len(body.encode()) <= MAX_NOTIFY_BYTES
        recipients = sorted({user for e in events for user in e.to})
        reads = [e.time for e in events if e.kind == "read"]
        with _translate("publish"):
            self.db.query_value("events/publish", channel=self.channel, user_uuids=recipients,
                                message_group_uuid=group, position=_parse(max(e.time for e in events)),
                                read_position=_parse(max(reads)) if reads else None,
                                inline=body if fits else None, payload=None if fits else body)

    def activity(self, user_uuid: str, since: str) -> dict[str, dict]:
        """Return what the user was sent after `since` (a table timestamp), by conversation.

        {conversation: {"position": newest, "read": newest read event's time or None}}
        """
        with _translate("read activity"):
            rows = self.db.query_array("events/activity", user_uuid=user_uuid, since=_parse(since))
        return {row["message_group_uuid"]: {"position": to_iso(row["position"]),
                                            "read": to_iso(row["read_position"]) if row["read_position"] else None}
                for row in rows}

    def prune(self) -> int:
        """Forget publishes older than the replay window; return how many."""
        return self.db.query_commit("events/prune", keep_seconds=self.keep_seconds)

    # ---------------------------------------------------------- subscribe

    def subscribe(self, user_uuid: str) -> Subscription:
        """Return a mailbox of the user's events; DatabaseUnavailable if this process cannot LISTEN."""
        self._start()
        if not self._connected.wait(self.timeout):
            raise DatabaseUnavailable(detail="not listening for events: Postgres unreachable")
        subscription = Subscription(self, user_uuid)
        with self._lock:
            self._subscriptions.setdefault(user_uuid, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a subscription."""
        with self._lock:
            mine = self._subscriptions.get(subscription.user_uuid)
            if mine is not None:
                mine.discard(subscription)
                if not mine:
                    del self._subscriptions[subscription.user_uuid]

    def subscriber_count(self) -> int:
        """Return how many streams this process serves."""
        with self._lock:
            return sum(map(len, self._subscriptions.values()))

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._connected.is_set()

    def close(self) -> None:
        """Stop listening (at process exit)."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    # ----------------------------------------------------------- listener

    def _start(self) -> None:
        # Started lazily, in the process that serves: a thread does not survive the server's fork.
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="cruddur-events-listener", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        first = True
        next_prune = time.monotonic() + random.uniform(0, PRUNE_SECONDS)
        while not self._stop.is_set():
            try:
                # Named, so an operator (or a test) can tell the listeners in pg_stat_activity.
                options = {**connect_kwargs(self.timeout), "application_name": LISTENER_NAME}
                with psycopg.connect(self.url, **options) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {self.channel}")
                    self._connected.set()
                    if not first:
                        self.reconnects += 1
                        log.warning("listening for events again: streams replay what they may have missed")
                        self._broadcast(GAP)
                    first, delay = False, 0.1
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=QUIET_PING_SECONDS):
                            self.dispatch(notification.payload)
                        conn.execute("SELECT 1")  # a quiet connection may be a dead one
                        if time.monotonic() >= next_prune:
                            next_prune = time.monotonic() + PRUNE_SECONDS
                            self._prune_quietly()
            except (psycopg.Error, OSError) as exc:
                if self._stop.is_set():
                    break
                log.warning("events listener lost Postgres (%s); reconnecting in %.1fs", one_line(exc), delay)
            finally:
                self._connected.clear()
                self._conn = None
            self._stop.wait(delay)
            delay = min(RECONNECT_MAX_SECONDS, delay * 2)

    def _prune_quietly(self) -> None:
        try:
            pruned = self.prune()
        except DatabaseUnavailable as exc:
            log.warning("could not prune old events: %s", exc)
            return
        if pruned:
            log.info("pruned %d published events past the replay window", pruned)

    def dispatch(self, payload: str) -> int:
        """Hand the events of one notification to their recipients' mailboxes; return how many were queued."""
        try:
            message = json.loads(payload)
            if "ref" in message:
                stored = self.db.query_value("events/payload", id=int(message["ref"]))
                if stored is None:
                    log.warning("published events %s are gone (pruned?)", message["ref"])
                    return 0
                message = json.loads(stored)
            events = [Event.from_json(e) for e in message["e"]]
        except (ValueError, KeyError, TypeError) as exc:
            log.error("malformed event notification (%s): %.200s", exc, payload)
            return 0
        except DatabaseUnavailable as exc:
            # The events are lost for this process: its streams must replay.
            log.warning("could not read published events: %s", exc)
            self._broadcast(GAP)
            return 0
        queued = 0
        for event in events:
            for subscription in self._recipients(event.to):
                subscription.put(event)
                queued += 1
        return queued

    def _recipients(self, users: Iterable[str]) -> list[Subscription]:
        with self._lock:
            return [s for user in users for s in self._subscriptions.get(user, ())]

    def _broadcast(self, item: Gap) -> None:
        with self._lock:
            everyone = [s for mine in self._subscriptions.values() for s in mine]
        for subscription in everyone:
            subscription.put(item)


@contextlib.contextmanager
def _translate(what: str):
    """Turn any Postgres error (a missing realtime_events table included) into DatabaseUnavailable."""
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        log.error("table realtime_events is missing: load db/schema.sql (bin/db/schema-load)")
        raise DatabaseUnavailable(detail=f"events: could not {what}: {one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseUnavailable(detail=f"events: could not {what}: {one_line(exc)}") from exc


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
