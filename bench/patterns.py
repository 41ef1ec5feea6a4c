"""Patterns A–E and R (mark read): what AWS would bill per call, the least the access pattern allows, latency.

The bill is the meter's price of every call the code made (toolbox/capacity.py).
The minimum comes from the access pattern alone: the items it must touch,
read back from the table after the call, priced with the same rules; so a
page read one item too long, an extra call or a retried write shows up as a
bill above the minimum. Growth curves repeat A, B and D on ever larger data.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from backend_flask.lib import ddb
from backend_flask.lib.ddb.keys import GROUP_INDEX, GROUP_PREFIX, MEMBER_PREFIX, MESSAGE_PREFIX
from backend_flask.lib.pubsub import Bus
from backend_flask.services import events, message_groups, messages
from bench.loadgen import percentile
from toolbox import seed, stream_runner
from toolbox.capacity import (
    CapacityMeter,
    consumed_capacity,
    delete_cost,
    get_cost,
    item_size,
    put_cost,
    query_cost,
    write_units,
)

PAGE = 20
RAW_EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Call fn repeat times; return each call's time in ms."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def person(name: str) -> dict:
    """A made-up participant (patterns need no login)."""
    return {"uuid": str(uuid.uuid4()), "handle": f"{name}{uuid.uuid4().hex[:6]}", "display_name": name.title()}


class Reader:
    """Reads raw items back from the table on a client of its own, outside every meter."""

    def __init__(self, client, table: str):
        self.client = client
        self.table = table

    def get(self, pk: str, sk: str) -> dict | None:
        return self.client.get_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                    ConsistentRead=True).get("Item")

    def newest(self, pk: str, limit: int) -> list[dict]:
        return self.client.query(TableName=self.table, KeyConditionExpression="pk = :pk", ScanIndexForward=False,
                                 ExpressionAttributeValues={":pk": {"S": pk}}, Limit=limit,
                                 ConsistentRead=True)["Items"]

    def count(self, pk: str) -> int:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk", "Select": "COUNT",
                                  "ExpressionAttributeValues": {":pk": {"S": pk}}}
        total = 0
        while True:
            response = self.client.query(**kwargs)
            total += response["Count"]
            if "LastEvaluatedKey" not in response:
                return total
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def members(self, group: str) -> list[dict]:
        """The membership items of a group."""
        return self.newest(MEMBER_PREFIX + group, 10)

    def group_rows(self, group: str) -> list[dict]:
        """The conversation rows of a group as the index shows them (the newest per owner)."""
        items = self.client.query(TableName=self.table, IndexName=GROUP_INDEX,
                                  KeyConditionExpression="message_group_uuid = :g",
                                  ExpressionAttributeValues={":g": {"S": group}})["Items"]
        newest: dict[str, dict] = {}
        for item in items:
            owner = item["pk"]["S"]
            if item["sk"]["S"] > newest.get(owner, {"sk": {"S": ""}})["sk"]["S"]:
                newest[owner] = item
        return list(newest.values())


class Metered(contextlib.AbstractContextManager):
    """A table whose client's calls are priced, and DynamoDB Local's own figures beside them (until closed)."""

    def __init__(self, table: ddb.MessagesTable):
        self.table = table
        self.meter = CapacityMeter(table.client)

    def __exit__(self, *_exc) -> None:
        self.meter.close()

    def once(self, call: Callable[[Any], Any], setup: Callable[[], Any] = lambda: None) -> tuple[Any, Any, dict]:
        """Prepare with setup() (not billed), make one call; return what setup gave, the result, and the bill."""
        prepared = setup()
        self.meter.reset()
        with consumed_capacity(self.table.client) as local:
            result = call(prepared)
        return prepared, result, {"capacity": round(self.meter.total, 2),
                                  "local_reported": round(sum(c.get("CapacityUnits", 0.0) for c in local), 2),
                                  "calls": [f"{name} {cost:g}" for name, cost in self.meter.calls]}

    def per_call(self, call: Callable[[Any], Any], repeat: int, setup: Callable[[], Any] = lambda: None) -> dict:
        """Time `repeat` calls, each after a setup() neither timed nor billed; return p50, p99, bill per call."""
        samples, billed = [], 0.0
        for _ in range(repeat):
            prepared = setup()
            before = self.meter.total
            start = time.perf_counter()
            call(prepared)
            samples.append((time.perf_counter() - start) * 1000)
            billed += self.meter.total - before
        return {"p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2),
                "capacity_per_call": round(billed / max(1, repeat), 3), "calls": repeat}


def row(pattern: str, what: str, billed: dict, minimum: float, rule: str, timing: dict, **extra) -> dict:
    at_minimum = None if billed["capacity"] is None else billed["capacity"] <= minimum + 1e-9
    return {"pattern": pattern, "what": what, **billed, "minimum": round(minimum, 2), "minimum_rule": rule,
            "at_minimum": at_minimum, "p50_ms": timing["p50_ms"], "p99_ms": timing["p99_ms"], **extra}


def stream_event(message: dict) -> dict:
    """A DynamoDB Streams batch of one new message item, in Lambda's event shape."""
    return {"Records": [{"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb",
                         "dynamodb": {"Keys": {"pk": message["pk"], "sk": message["sk"]}, "NewImage": message,
                                      "SequenceNumber": str(time.time_ns()), "StreamViewType": "NEW_IMAGE"}}]}


def measure_patterns(table: ddb.MessagesTable, reader: Reader, me: dict, group: str, peer: dict,
                     repeat: int, bus: Bus | None = None) -> list[dict]:
    """Bill, minimum and latency of patterns A–E and R (mark read), through the services the API calls.

    A and D are measured twice: for a member this process has not seen yet
    (the membership read) and for one it remembers. E runs the stream
    Lambda's own batch handler on one new message. E' prices the cheapest
    correct alternative to E's transactions from the same rows. With `bus`
    (the API's event bus), sends and moved markers publish their events as
    the API does, and a minimum counts what an event needs that the pattern
    has not read anyway.
    """
    with Metered(table) as metered:
        return _measure_patterns(metered, table, reader, me, group, peer, repeat, bus)


def _measure_patterns(metered: Metered, table: ddb.MessagesTable, reader: Reader, me: dict, group: str,
                      peer: dict, repeat: int, bus: Bus | None) -> list[dict]:
    rows = []
    messages_pk, membership_key = MESSAGE_PREFIX + group, (MEMBER_PREFIX + group, me["uuid"])
    counter = iter(range(10**9))

    def peer_says() -> dict:
        """A new message from the other side (so my read marker is behind), and a process that forgot me."""
        table.known_members.pop()
        return table.create_message(message_group_uuid=group, sender=peer, message=f"news {next(counter)}")

    def forget() -> None:
        table.known_members.pop()

    def membership_and_page() -> tuple[dict, list[dict]]:
        return reader.get(*membership_key), reader.newest(messages_pk, PAGE)

    # What an event needs: a moved marker is told to the other member (the members, strongly consistent);
    # a new message's message_group events carry both rows (one eventually consistent index Query).
    tell_members = query_cost(reader.members(group), consistent=True) if bus else 0.0
    tell_rows = query_cost(reader.group_rows(group), consistent=False) if bus else 0.0
    members_rule = " + the members, to tell the other one (one strongly consistent Query)" if bus else ""
    rows_rule = " + both rows, for the message_group events (one eventually consistent index Query)" if bus else ""

    # A, first open in this process: membership read, the page, and the read marker moved to its newest message.
    def open_a(_prepared=None):
        return messages.list_messages(table, me, group, limit=PAGE, bus=bus)

    _, _, billed = metered.once(open_a, peer_says)
    membership, page = membership_and_page()
    count = reader.count(messages_pk)
    rows.append(row("A", f"open a conversation: {len(page)} of {count} messages, membership read, read marker moved",
                    billed, get_cost(membership, consistent=True) + query_cost(page, consistent=False)
                    + write_units(item_size(membership)) + tell_members,
                    "membership item (strongly consistent GetItem) + the page (one eventually consistent Query) "
                    "+ the marker on the membership item (one write)" + members_rule,
                    metered.per_call(open_a, repeat, peer_says), item_bytes=_sizes(page)))

    # A', the same member again: remembered, no new message, so the marker stays.
    _, _, billed = metered.once(open_a)
    page, count = reader.newest(messages_pk, PAGE), reader.count(messages_pk)
    rows.append(row("A'", f"open it again: {len(page)} of {count} messages, member remembered, nothing new",
                    billed, query_cost(page, consistent=False), "the page (one eventually consistent Query)",
                    metered.per_call(open_a, repeat), item_bytes=_sizes(page)))

    # B: my conversations, newest first, read state on the rows.
    def list_b(_prepared=None):
        return message_groups.list_message_groups(table, me, limit=PAGE)

    _, _, billed = metered.once(list_b)
    groups_page = reader.newest(GROUP_PREFIX + me["uuid"], PAGE)
    rows.append(row("B", f"list {len(groups_page)} of {reader.count(GROUP_PREFIX + me['uuid'])} conversations, "
                    "unread counts on the rows", billed, query_cost(groups_page, consistent=False),
                    "the page of rows (one eventually consistent Query)", metered.per_call(list_b, repeat),
                    item_bytes=_sizes(groups_page)))

    # C: a new pair's first message: both rows, the message and both memberships, all or nothing.
    # (start_conversation without its Postgres lookup of the receiver: every call needs a pair never seen.)
    def start_c(_prepared=None):
        sender, receiver = person("sender"), person("receiver")
        created = table.create_message_group(sender=sender, receiver=receiver, message="first")
        events.publish_message(bus, table, message=created, sender=sender, receiver=receiver)
        return created

    _, first, billed = metered.once(start_c)
    written = _conversation_items(reader, first)
    rows.append(row("C", "new conversation: 2 rows + message + 2 memberships, one transaction", billed,
                    sum(put_cost(item, transactional=True) for item in written),
                    "5 new items in one transaction (2 units per KB each) + the 2 rows' index entries"
                    + ("; its events need nothing it has not just written" if bus else ""),
                    metered.per_call(start_c, repeat), item_bytes=_sizes(written)))

    # D and D': append, as a member this process has not seen yet, then as one it remembers.
    def append_d(_prepared=None):
        return messages.append_message(table, sender=me, message_group_uuid=group, message="bench append", bus=bus)

    _, appended, billed = metered.once(append_d, forget)
    message = reader.get(messages_pk, appended["created_at"])
    membership = reader.get(*membership_key)
    rows.append(row("D", "append a message, membership read (first time in this process)", billed,
                    get_cost(membership, consistent=True) + put_cost(message) + tell_rows,
                    "membership item (strongly consistent GetItem) + the message (one PutItem, not indexed)"
                    + rows_rule,
                    metered.per_call(append_d, repeat, forget), item_bytes=_sizes([message])))
    _, appended, billed = metered.once(append_d)
    message = reader.get(messages_pk, appended["created_at"])
    rows.append(row("D'", "append a message, member remembered", billed, put_cost(message) + tell_rows,
                    "the message (one PutItem, not indexed)" + rows_rule, metered.per_call(append_d, repeat),
                    item_bytes=_sizes([message])))

    # E: the stream Lambda's handler on a batch of one new message (mine): count the peer's unread, move both rows.
    handler = stream_runner.load_handler_module()

    def new_message() -> dict:
        sent = table.create_message(message_group_uuid=group, sender=me, message=f"moved {next(counter)}")
        return reader.get(messages_pk, sent["created_at"])

    def handle_e(message: dict):
        return handler.process_batch(stream_event(message), table)

    # The messages sent above were never handled (no stream runs here): settle them first, so the metered
    # call handles one new message, as the Lambda does when it keeps up.
    handle_e(new_message())
    old_rows = reader.group_rows(group)
    message, _, billed = metered.once(handle_e, new_message)
    new_rows = reader.group_rows(group)
    reads = query_cost(old_rows, consistent=False) + get_cost(message, consistent=True)
    rows.append(row("E", "stream handler, 1 new message: count the unread, move both rows (transactions)", billed,
                    reads + sum(delete_cost(o, transactional=True) for o in old_rows)
                    + sum(put_cost(n, transactional=True) for n in new_rows),
                    "the rows from the index (eventually consistent) + the new message once (strongly consistent, "
                    "to count) + per row: delete old and put new in one transaction, and both index entries",
                    metered.per_call(handle_e, repeat, new_message), item_bytes=_sizes(new_rows)))
    rows.append(row("E'", "alternative: put the new row, then delete the old one (not the code)",
                    {"capacity": None, "local_reported": None, "calls": []},
                    reads + sum(delete_cost(o) for o in old_rows) + sum(put_cost(n) for n in new_rows),
                    "the same reads + per row: put new, then delete old, each one conditional plain write, and "
                    "both index entries", {"p50_ms": None, "p99_ms": None}, item_bytes=_sizes(new_rows)))

    # R: POST .../read: move my marker to the newest message and answer my unread count.
    def mark_r(_prepared=None):
        return messages.mark_read(table, me, group, bus=bus)

    newest, _, billed = metered.once(mark_r, peer_says)
    membership = reader.get(*membership_key)
    newest_item = reader.get(messages_pk, newest["created_at"])
    rows.append(row("R", "mark read: my marker to the newest message, answer my unread count", billed,
                    get_cost(membership, consistent=True) + get_cost(newest_item, consistent=True)
                    + write_units(item_size(membership)) + query_cost([], consistent=True) + tell_members,
                    "membership item and the newest message (strongly consistent) + the marker (one write) + "
                    "the messages after it, to count (strongly consistent; none)" + members_rule,
                    metered.per_call(mark_r, repeat, peer_says), item_bytes=_sizes([membership])))
    return rows


def _conversation_items(reader: Reader, result: dict) -> list[dict]:
    """The five items pattern C wrote for this result, read back."""
    group = result["message_group_uuid"]
    members = [m["sk"]["S"] for m in reader.newest(MEMBER_PREFIX + group, 10)]
    rows = [reader.newest(GROUP_PREFIX + member, 1)[0] for member in members]
    memberships = [reader.get(MEMBER_PREFIX + group, member) for member in members]
    return [*rows, reader.get(MESSAGE_PREFIX + group, result["created_at"]), *memberships]


def _sizes(items: list[dict]) -> list[int]:
    return [item_size(i) for i in items]


# ------------------------------------------------------------------ growth

def conversation_of(table: ddb.MessagesTable, messages: int, *, workers: int = 4) -> tuple[dict, str]:
    """A made-up pair whose conversation holds `messages` messages (6 through C and D, the rest in bulk)."""
    sender, receiver = person("grow"), person("peer")
    bulk = max(0, messages - len(seed.DEMO_MESSAGES))
    result = seed.seed_messages(table, sender, receiver, bulk, workers=workers)
    return sender, result["message_group_uuid"]


def measure_growth(table: ddb.MessagesTable, conversations: dict[int, tuple[dict, str]], owners: dict[int, dict],
                   repeat: int, bus: Bus | None = None) -> list[dict]:
    """p50, p99 and capacity per call of A and D by conversation size, and of B by the owner's conversation count."""
    with Metered(table) as metered:
        return _measure_growth(metered, table, conversations, owners, repeat, bus)


def _measure_growth(metered: Metered, table: ddb.MessagesTable, conversations: dict[int, tuple[dict, str]],
                    owners: dict[int, dict], repeat: int, bus: Bus | None) -> list[dict]:
    rows = []
    for size, (sender, group) in sorted(conversations.items()):
        def open_a(_prepared=None, group=group, sender=sender):
            return messages.list_messages(table, sender, group, limit=PAGE, bus=bus)

        page = len(open_a()["items"])   # the first open reads the membership and moves the marker
        rows.append({"pattern": "A", "size": size, "of": "messages; open again, member remembered", "page": page,
                     **metered.per_call(open_a, repeat)})
    for size, (sender, group) in sorted(conversations.items()):
        def append_d(_prepared=None, group=group, sender=sender):
            return messages.append_message(table, sender=sender, message_group_uuid=group, message="growth", bus=bus)

        rows.append({"pattern": "D", "size": size, "of": "messages; append, member remembered", "page": None,
                     **metered.per_call(append_d, repeat)})
    for size, owner in sorted(owners.items()):
        def list_b(_prepared=None, owner=owner):
            return message_groups.list_message_groups(table, owner, limit=PAGE)

        rows.append({"pattern": "B", "size": size, "of": "conversation rows of the user, written in bulk",
                     "page": len(list_b()["items"]), **metered.per_call(list_b, repeat)})
    return rows


def growth_ratios(rows: list[dict]) -> dict[str, dict]:
    """Per pattern: largest size's figure / smallest size's figure, for p50, p99 and capacity per call."""
    out = {}
    for pattern in sorted({r["pattern"] for r in rows}):
        mine = sorted((r for r in rows if r["pattern"] == pattern), key=lambda r: r["size"])
        small, large = mine[0], mine[-1]
        out[pattern] = {"smallest": small["size"], "largest": large["size"],
                        **{key: _ratio(large[key], small[key]) for key in ("p50_ms", "p99_ms", "capacity_per_call")},
                        # A page of fewer items costs less: per item returned compares like with like (D: per call).
                        "capacity_per_item": _ratio(_per_item(large), _per_item(small))}
    return out


def _per_item(row: dict) -> float:
    return row["capacity_per_call"] / row["page"] if row["page"] else row["capacity_per_call"]


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


# ------------------------------------------------------------------ seeding

def measure_seeding(table: ddb.MessagesTable, client, messages: int, workers: int) -> tuple[dict, tuple[dict, str]]:
    """toolbox.seed (what bin/ddb/seed runs) against a raw BatchWriteItem loop, both on `workers` threads.

    Returns the figures and the seeded conversation (sender, group), which the
    growth curves then read.
    """
    start = time.perf_counter()
    conversation = conversation_of(table, messages, workers=workers)
    seed_seconds = time.perf_counter() - start
    bulk = max(0, messages - len(seed.DEMO_MESSAGES))
    sender = person("raw")
    group = str(uuid.uuid4())

    def batch(offset: int) -> None:
        pending = {table.name: [{"PutRequest": {"Item": ddb.to_item(ddb.message_item(
            group, ddb.to_iso(RAW_EPOCH - n * seed.BULK_SPACING), str(uuid.uuid4()), sender, f"raw {n}"))}}
            for n in range(offset, min(bulk, offset + 25))]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(batch, range(0, bulk, 25)))
    raw_seconds = time.perf_counter() - start
    return {"messages": messages, "bulk_items": bulk, "threads": workers,
            "seed_seconds": round(seed_seconds, 2), "raw_seconds": round(raw_seconds, 2),
            "seed_per_s": round(bulk / seed_seconds), "raw_per_s": round(bulk / raw_seconds),
            "seed_vs_raw": round(raw_seconds / seed_seconds, 2)}, conversation
