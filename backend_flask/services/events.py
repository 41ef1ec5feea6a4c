"""Real-time events: publish what changed, and serve each user's resumable stream of it (SSE).

Events (docs/REALTIME.md has the whole design):

- `message`: {message_group_uuid, uuid, display_name, handle, message, created_at},
  to every member of the conversation, the sender included (other tabs);
- `message_group`: the member's conversation row as GET /api/message_groups
  shows it (`group_out`), to that member, whenever it changes;
- `read`: {message_group_uuid, handle, last_read_at}, to the other members,
  when someone reads.

Each event has a position: the time of the change, its kind and its
conversation. A stream's `id:` is not one position but a cursor: a watermark
W (every event at or before W has been delivered) plus the positions
delivered after W. Events reach a process out of order (writers on other
machines finish in any order), so "the last position" would skip or repeat
some on resume; the cursor does neither. W trails the time events arrive by
PUBLISH_BOUND_SECONDS, the bound on a message's creation-to-publish delay.

Resuming (Last-Event-ID) replays from the table, the source of truth: the
user's conversation rows placed after W, plus the conversations the publish
log names (rows that pattern E has not moved yet), then each one's messages
after W, strongly consistent. Too old (more than REPLAY_SECONDS) or too much
to replay: `reset`, and the client reloads its lists.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.ddb.keys import GROUP_PREFIX, group_out, message_out, now_iso, row_time, to_iso
from backend_flask.lib.errors import Error, Unauthorized
from backend_flask.lib.pubsub import GAP, Bus, Event

log = logging.getLogger(__name__)

PUBLISH_BOUND_SECONDS = 10.0   # a message's created_at to its publish reaching every process, at most
REPLAY_SECONDS = 3600.0        # how far back Last-Event-ID resumes; older answers `reset`
MAX_REPLAY_GROUPS = 100        # conversations changed since the cursor; more answers `reset`
MAX_REPLAY_MESSAGES = 100      # messages of one conversation since the cursor; more answers `reset`
MAX_SEEN = 64                  # positions after the watermark an id carries (beyond: a resume may repeat some)
RETRY_MILLISECONDS = 2000      # EventSource's reconnection delay
KINDS = {"message": "m", "message_group": "g", "read": "r"}
_ORDER = {"m": 0, "g": 1, "r": 2}   # of one change: the message, then the row it moved, then a read

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BOUND_US = int(PUBLISH_BOUND_SECONDS * 1_000_000)
_CURSOR = re.compile(r"1\.([0-9a-f]{1,14})((?:\.[0-9a-f]{1,12}[mgr][0-9a-f]{8}){0,64})")  # 64: MAX_SEEN
_SEEN = re.compile(r"\.([0-9a-f]{1,12})([mgr])([0-9a-f]{8})")

Position = tuple[int, str, str]   # (microseconds since the epoch, kind letter, conversation's first 8 hex digits)


# ------------------------------------------------------------------ positions and cursors

def micros(timestamp: str) -> int:
    """Return a table timestamp as microseconds since the epoch."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> str:
    """Return microseconds since the epoch as a table timestamp."""
    return to_iso(_EPOCH + timedelta(microseconds=value))


def position(event: Event) -> Position:
    """Return where an event sits among a user's events."""
    return micros(event.time), KINDS[event.kind], event.message_group_uuid.replace("-", "")[:8].lower()


def replay_order(event: Event) -> tuple[int, int, str]:
    """Sort key of replayed events: by time; of one change, the message before the row it moved."""
    us, kind, group = position(event)
    return us, _ORDER[kind], group


@dataclass
class Cursor:
    """What a stream has delivered: everything up to `watermark`, and the positions in `seen` after it.

    `floor` is for live events only: a new stream starts at the moment it
    opens (its watermark), but still takes what arrives late from just before
    (after its floor), as long as its watermark has not moved.
    """

    watermark: int
    seen: set[Position] = field(default_factory=set)
    floor: int | None = None

    def __post_init__(self):
        if self.floor is None:
            self.floor = self.watermark

    @classmethod
    def opened(cls, now: float) -> Cursor:
        """Return the cursor of a stream that opens now: what is created from now on."""
        start = int(now * 1_000_000)
        return cls(start, floor=start - _BOUND_US)

    @classmethod
    def decode(cls, value: str | None) -> Cursor | None:
        """Return the cursor an event id encodes, or None if it is not one of ours."""
        match = _CURSOR.fullmatch(value or "")
        if match is None:
            return None
        watermark = int(match[1], 16)
        return cls(watermark, {(watermark + int(d, 16), k, g) for d, k, g in _SEEN.findall(match[2])})

    def encode(self) -> str:
        """Return the cursor as an event id (ASCII, a few hundred bytes at most)."""
        after = sorted(p for p in self.seen if p[0] > self.watermark)
        return ".".join(["1", format(self.watermark, "x"), *(f"{us - self.watermark:x}{k}{g}" for us, k, g in after)])

    def delivered(self, where: Position) -> bool:
        """Tell whether the event at this position was delivered already (or is older than the stream)."""
        return where[0] <= self.watermark or where in self.seen

    def wants(self, where: Position) -> bool:
        """Tell whether a live event at this position is new to the stream."""
        return where[0] > self.floor and where not in self.seen

    def add(self, where: Position) -> None:
        """Note a delivered event."""
        if where[0] > self.floor:
            self.seen.add(where)
            if len(self.seen) > MAX_SEEN:
                # Forgetting the oldest may repeat it after a resume; moving the watermark could lose one.
                self.seen.discard(min(self.seen))

    def advance(self, horizon: float) -> bool:
        """Move the watermark to `horizon` minus the publish bound; True if it moved.

        `horizon`: a time by which every event that arrived has been handled.
        """
        return self.advance_to(int(horizon * 1_000_000) - _BOUND_US)

    def advance_to(self, watermark: int) -> bool:
        """Move the watermark forward to `watermark` (microseconds), forgetting what it now covers."""
        if watermark <= self.watermark:
            return False
        self.watermark = watermark
        self.floor = max(self.floor, watermark)
        self.seen = {p for p in self.seen if p[0] > self.floor}
        return True


# ------------------------------------------------------------------ building events

def message_event(message_group_uuid: str, message: dict, to: Iterable[str]) -> Event:
    """Return the `message` event of a message ({uuid, display_name, handle, message, created_at})."""
    data = {"message_group_uuid": message_group_uuid, **{k: message[k] for k in
                                                          ("uuid", "display_name", "handle", "message",
                                                           "created_at")}}
    return Event("message", message["created_at"], message_group_uuid, tuple(to), data)


def group_event(owner: str, row: dict) -> Event:
    """Return the `message_group` event of an owner's conversation row (a table item)."""
    view = group_out(row)
    changed = max(v for k, v in view.items() if k in ("created_at", "last_read_at", "peer_last_read_at")
                  and isinstance(v, str) and v)
    return Event("message_group", changed, view["uuid"], (owner,), view)


def read_event(message_group_uuid: str, reader_handle: str, last_read_at: str, to: Iterable[str], *,
               at: str) -> Event:
    """Return the `read` event: the reader read the conversation up to last_read_at, at time `at`.

    Its position is when the read happened, not the marker: a marker is a
    message's time, which may be long past.
    """
    return Event("read", at, message_group_uuid, tuple(to),
                 {"message_group_uuid": message_group_uuid, "handle": reader_handle, "last_read_at": last_read_at})


def with_message(row: dict, text: str, at: str, sender: str | None = None) -> dict:
    """Return a conversation row as pattern E will leave it for a message (unchanged if it is newer).

    Given the sender, the read state too: the sender has read up to their
    message (nothing unread), the other has one more unread and sees the
    sender's read position move. The list, settled by E, stays the truth.
    """
    if row_time(row) >= at:
        return row
    new = {**row, "sk": max(row.get("sk", ""), at), "message": text, "last_message_at": at}
    if sender is None:
        return new
    if row.get("pk") == GROUP_PREFIX + sender:
        new.update(unread=0, read_at=at)
    else:
        counted = row.get("counted_until") or row_time(row)
        new.update(unread=int(row.get("unread") or 0) + (at > counted), counted_until=max(counted, at),
                   peer_read_at=max(row.get("peer_read_at") or "", at))
    return new


# ------------------------------------------------------------------ publishing

def publish_message(bus: Bus | None, table: MessagesTable, *, message: dict, sender: dict,
                    receiver: dict | None = None) -> None:
    """Publish a stored message: `message` to every member, `message_group` to each for their own row.

    `message` is what POST /api/messages answered, with its message_group_uuid.
    Never raises for a backing service: the message is stored, and streams
    that miss this publish find it when they replay.
    """
    if bus is None:
        return
    group, at = message["message_group_uuid"], message["created_at"]
    late = time.time() - micros(at) / 1_000_000
    if late > PUBLISH_BOUND_SECONDS / 2:
        log.warning("publishing message %s %.1fs after it was created (bound %.0fs): open streams may skip it",
                    message["uuid"], late, PUBLISH_BOUND_SECONDS)
    try:
        rows = table.group_rows(group)  # each member's row, for the message_group events
        people = {sender["uuid"]: sender, **({receiver["uuid"]: receiver} if receiver else {})}
        for row in rows.values():
            people.setdefault(row["user_uuid"], _shown(row))
        members = set(people) | {pk[len(GROUP_PREFIX):] for pk in rows}
        if len(members) < 2:  # the index does not show this conversation yet
            members |= table.members(group)
        events = [message_event(group, message, sorted(members))]
        for member in sorted(members):
            other = next((p for uuid, p in people.items() if uuid != member), None)
            row = rows.get(GROUP_PREFIX + member) or _new_row(group, member, other, at)
            if row is None:
                log.info("no conversation row of %s in %s to publish yet", member, group)
                continue
            events.append(group_event(member, with_message(row, message["message"], at, sender["uuid"])))
        bus.publish(events)
    except Error as exc:
        log.warning("could not publish message %s of %s: %s", message.get("uuid"), group, exc)


def _shown(item: dict) -> dict:
    """Return the person a conversation row or message item names."""
    return {"uuid": item["user_uuid"], "handle": item.get("user_handle"), "display_name": item.get("user_display_name")}


def _new_row(group: str, owner: str, other: dict | None, at: str) -> dict | None:
    """The row of a conversation the index does not show yet: it shows the other member, if we know who."""
    if other is None or not other.get("handle"):
        return None
    return {"pk": GROUP_PREFIX + owner, "sk": at, "message_group_uuid": group, "user_uuid": other["uuid"],
            "user_display_name": other["display_name"], "user_handle": other["handle"]}


def publish_read(bus: Bus | None, *, message_group_uuid: str, reader: dict, last_read_at: str,
                 members: Iterable[str], rows: Mapping[str, dict] | None = None) -> None:
    """Publish a read: `read` to the reader's peers, and `message_group` for every row that changed.

    rows: owner uuid -> that owner's conversation row (the table item) as it
    is after the read, e.g. from `table.group_rows(group)`.
    """
    if bus is None:
        return
    peers = sorted(m for m in members if m != reader["uuid"])
    events = [read_event(message_group_uuid, reader["handle"], last_read_at, peers, at=now_iso())]
    events += [group_event(owner, row) for owner, row in sorted((rows or {}).items())]
    try:
        bus.publish(events)
    except Error as exc:
        log.warning("could not publish the read of %s by %s: %s", message_group_uuid, reader["uuid"], exc)


# ------------------------------------------------------------------ tickets

def issue_ticket(table: MessagesTable, user: dict, *, token_expires_at: int) -> dict:
    """Return a one-time ticket that opens the user's stream: {"ticket", "expires_at"}."""
    return table.issue_ticket(user, token_expires_at=token_expires_at)


def redeem_ticket(table: MessagesTable, ticket: str) -> tuple[dict, int]:
    """Use a ticket up; return (user, when their token expires); 401 ticket_invalid if it cannot be used."""
    found = table.redeem_ticket(ticket)
    if found is None:
        raise Unauthorized("ticket_invalid")
    return found["user"], found["token_expires_at"]


# ------------------------------------------------------------------ replay

def replay(bus: Bus, table: MessagesTable, user_uuid: str, cursor: Cursor) -> list[Event] | None:
    """Return the user's events after the cursor, from the table, in position order; None if too many."""
    since = from_micros(cursor.watermark)
    rows, more = table.rows_since(user_uuid, since, limit=MAX_REPLAY_GROUPS)
    if more:
        return None
    changed = {row["message_group_uuid"]: row for row in rows if row.get("message_group_uuid")}
    # Conversations whose rows pattern E has not moved yet, and reads (which move no row), from the publish log.
    activity = bus.activity(user_uuid, since)
    groups = set(changed) | set(activity)
    if len(groups) > MAX_REPLAY_GROUPS:
        return None
    found: list[Event] = []
    for group in sorted(groups):
        items, more = table.messages_since(group, since, limit=MAX_REPLAY_MESSAGES)
        if more:
            return None
        messages = [message_out(item) for item in items]
        found += [message_event(group, message, (user_uuid,)) for message in messages]
        row = changed.get(group) or table.group_rows(group).get(GROUP_PREFIX + user_uuid)
        if row is None:  # a conversation the index does not show yet: the other member's messages name them
            other = next((_shown(i) for i in reversed(items) if i.get("user_uuid") != user_uuid), None)
            row = _new_row(group, user_uuid, other, since)
            if row is None:
                continue
        if messages:  # the last message as pattern E will show it; read state as the table has it so far
            row = with_message(row, messages[-1]["message"], messages[-1]["created_at"])
        event = group_event(user_uuid, row)
        found.append(event)
        read_at = activity.get(group, {}).get("read")
        if read_at:  # the other member read since: their marker as the table has it now, placed at the read
            peer = row.get("user_uuid")
            marker = (table.membership(group, peer, fresh=True) or {}).get("last_read_at") if peer else None
            if marker:
                found.append(read_event(group, event.data["handle"], marker, (user_uuid,), at=read_at))
    return sorted((e for e in found if not cursor.delivered(position(e))), key=replay_order)


# ------------------------------------------------------------------ the stream

def sse(*, event: str | None = None, data: dict | None = None, id: str | None = None,
        comment: str | None = None, retry: int | None = None) -> str:
    """Return one Server-Sent Events block (the data is one line of JSON)."""
    lines = [f": {comment}"] if comment is not None else []
    if retry is not None:
        lines.append(f"retry: {retry}")
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    if data is not None:
        lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def open_stream(bus: Bus, table: MessagesTable, user: dict, *, token_expires_at: float,
                last_event_id: str | None = None, heartbeat: float = 15.0) -> Iterator[str]:
    """Subscribe and replay what the client missed, then return the stream's text, block by block.

    Subscribing and the first replay happen now, so a backing service that is
    down is a 503 rather than a stream that ends at once.
    """
    subscription = bus.subscribe(user["uuid"])
    subscribed = time.time()
    try:
        cursor = Cursor.decode(last_event_id) if last_event_id else None
        first: list[Event] | None = []
        if last_event_id and (cursor is None or not
                              (subscribed - REPLAY_SECONDS) * 1e6 <= cursor.watermark <= subscribed * 1e6):
            first = None  # not ours, too old, or from the future (it would hold back every live event): reset
        elif cursor is not None:
            first = replay(bus, table, user["uuid"], cursor)
    except BaseException:
        subscription.close()
        raise
    return _stream(bus, table, user["uuid"], subscription, cursor, first, subscribed, token_expires_at, heartbeat)


def _stream(bus, table, user_uuid, subscription, cursor, first, subscribed, token_expires_at, heartbeat):
    reset = first is None
    if cursor is None or reset:
        cursor = Cursor.opened(subscribed)
    sent = 0
    try:
        yield sse(retry=RETRY_MILLISECONDS, id=cursor.encode())  # headers out, and an id to resume from
        if reset:
            yield sse(event="reset", data={}, id=cursor.encode())
        else:
            yield from _replayed(first, cursor, subscribed)
        cursor.advance(subscribed)  # what arrives from now on is in the mailbox
        # The first keep-alive comes a little early, at random: streams opened together (clients
        # reconnecting after a deploy) then do not all wake at the same instant every interval.
        next_beat = time.monotonic() + heartbeat * random.uniform(0.5, 1.0)
        while True:
            left = token_expires_at - time.time()
            if left <= 0:
                yield sse(event="token_expired", data={})
                return
            item, horizon = subscription.get(min(left, next_beat - time.monotonic()))
            if item is GAP:
                queried = time.time()
                try:
                    events = replay(bus, table, user_uuid, cursor)
                except Error as exc:
                    log.warning("replay after a gap failed for %s: %s; ending the stream", user_uuid, exc)
                    return  # the client reconnects and resumes from its last id
                if events is None:
                    cursor = Cursor.opened(horizon)
                    yield sse(event="reset", data={}, id=cursor.encode())
                else:
                    yield from _replayed(events, cursor, queried)
                cursor.advance(horizon)
            elif item is not None and cursor.wants(where := position(item)):
                cursor.add(where)
                cursor.advance(horizon)
                sent += 1
                yield sse(event=item.kind, data=item.data, id=cursor.encode())
            if time.monotonic() >= next_beat:
                moved = cursor.advance(horizon)
                yield sse(comment="keep-alive", id=cursor.encode() if moved else None)
                next_beat = time.monotonic() + heartbeat
    finally:
        subscription.close()
        log.info("event stream of %s closed after %.0f s, %d live events; %d streams left in this process",
                 user_uuid, time.time() - subscribed, sent, bus.subscriber_count())


def _replayed(events: list[Event], cursor: Cursor, queried: float) -> Iterator[str]:
    """Yield replayed events (in position order), each with the id that resumes right after it.

    Once an event at position p is out, everything before p is too, except
    what was created before p but written after the replay's queries, which
    the publish bound puts after `queried` minus the bound: the watermark
    follows the replay up to there, so the ids stay short.
    """
    limit = int(queried * 1_000_000) - _BOUND_US
    for event in events:
        where = position(event)
        cursor.add(where)
        cursor.advance_to(min(where[0] - 1, limit))
        yield sse(event=event.kind, data=event.data, id=cursor.encode())
