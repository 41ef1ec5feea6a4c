"""Patterns A–E at the table: what AWS would bill per call, the least the access pattern allows, and latency.

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
from bench.loadgen import percentile
from toolbox import seed
from toolbox.capacity import (
    CapacityMeter,
    consumed_capacity,
    delete_cost,
    get_cost,
    item_size,
    put_cost,
    query_cost,
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

    def once(self, call: Callable[[], Any]) -> tuple[Any, dict]:
        """Make one call; return its result and what it was billed."""
        self.meter.reset()
        with consumed_capacity(self.table.client) as local:
            result = call()
        return result, {"capacity": round(self.meter.total, 2),
                        "local_reported": round(sum(c.get("CapacityUnits", 0.0) for c in local), 2),
                        "calls": [f"{name} {cost:g}" for name, cost in self.meter.calls]}

    def per_call(self, call: Callable[[], Any], repeat: int) -> dict:
        """Time `repeat` calls; return p50, p99 and the average bill per call."""
        self.meter.reset()
        samples = timed(call, repeat)
        return {"p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2),
                "capacity_per_call": round(self.meter.total / max(1, repeat), 3), "calls": repeat}


def row(pattern: str, what: str, billed: dict, minimum: float, rule: str, timing: dict, **extra) -> dict:
    at_minimum = None if billed["capacity"] is None else billed["capacity"] <= minimum + 1e-9
    return {"pattern": pattern, "what": what, **billed, "minimum": round(minimum, 2), "minimum_rule": rule,
            "at_minimum": at_minimum, "p50_ms": timing["p50_ms"], "p99_ms": timing["p99_ms"], **extra}


def measure_patterns(table: ddb.MessagesTable, reader: Reader, me: dict, group: str, repeat: int) -> list[dict]:
    """Bill, minimum and latency of patterns A–E, and the cheapest correct alternative to E, priced."""
    with Metered(table) as metered:
        return _measure_patterns(metered, table, reader, me, group, repeat)


def _measure_patterns(metered: Metered, table: ddb.MessagesTable, reader: Reader, me: dict, group: str,
                      repeat: int) -> list[dict]:
    rows = []

    # A: the membership check, then the newest page of the conversation.
    def list_a():
        return table.is_member(group, me["uuid"]), table.list_messages(group, limit=PAGE)

    _, billed = metered.once(list_a)
    membership = reader.get(MEMBER_PREFIX + group, me["uuid"])
    page = reader.newest(MESSAGE_PREFIX + group, PAGE)
    rows.append(row("A", f"list {len(page)} of {reader.count(MESSAGE_PREFIX + group)} messages (+ membership read)",
                    billed, get_cost(membership, consistent=True) + query_cost(page, consistent=False),
                    "membership item by a strongly consistent GetItem + the page by one eventually consistent Query",
                    metered.per_call(list_a, repeat), item_bytes=_sizes(page)))

    # B: my conversations, newest first.
    def list_b():
        return table.list_message_groups(me["uuid"], limit=PAGE)

    _, billed = metered.once(list_b)
    page = reader.newest(GROUP_PREFIX + me["uuid"], PAGE)
    rows.append(row("B", f"list {len(page)} of {reader.count(GROUP_PREFIX + me['uuid'])} conversations", billed,
                    query_cost(page, consistent=False), "the page of rows by one eventually consistent Query",
                    metered.per_call(list_b, repeat), item_bytes=_sizes(page)))

    # C: a new pair's first message: both rows, the message and both memberships, all or nothing.
    def start_c():
        return table.create_message_group(sender=person("sender"), receiver=person("receiver"), message="first")

    first, billed = metered.once(start_c)
    written = _conversation_items(reader, first)
    rows.append(row("C", "new conversation: 2 rows + message + 2 memberships, one transaction", billed,
                    sum(put_cost(item, transactional=True) for item in written),
                    "5 new items in one transaction (2 units per KB each) + the 2 rows' index entries",
                    metered.per_call(start_c, repeat), item_bytes=_sizes(written)))

    # D: append to a conversation I belong to.
    def append_d():
        assert table.is_member(group, me["uuid"])
        return table.create_message(message_group_uuid=group, sender=me, message="bench append")

    appended, billed = metered.once(append_d)
    message = reader.get(MESSAGE_PREFIX + group, appended["created_at"])
    rows.append(row("D", "append a message (membership read + conditional put)", billed,
                    get_cost(membership, consistent=True) + put_cost(message),
                    "membership item by a strongly consistent GetItem + the message by one PutItem (not indexed)",
                    metered.per_call(append_d, repeat), item_bytes=_sizes([message])))

    # E: the stream handler moves both conversation rows to the newest message.
    counter = iter(range(10**9))

    def move_e():
        return table.move_message_groups(group, ddb.now_iso(), f"moved {next(counter)}")

    old_rows = reader.group_rows(group)
    _, billed = metered.once(move_e)
    new_rows = reader.group_rows(group)
    find = query_cost(old_rows, consistent=False)
    timing = metered.per_call(move_e, repeat)
    rows.append(row("E", "move both conversation rows to a new message (stream handler)", billed,
                    find + sum(delete_cost(o, transactional=True) for o in old_rows)
                    + sum(put_cost(n, transactional=True) for n in new_rows),
                    "the rows from the index (eventually consistent) + per row: delete old and put new in one "
                    "transaction, and both index entries", timing, item_bytes=_sizes(new_rows)))
    rows.append(row("E'", "alternative: put the new row, then delete the old one (not the code)",
                    {"capacity": None, "local_reported": None, "calls": []},
                    find + sum(delete_cost(o) for o in old_rows) + sum(put_cost(n) for n in new_rows),
                    "the same reads + per row: put new, then delete old, each one conditional plain write, and "
                    "both index entries", {"p50_ms": None, "p99_ms": None}, item_bytes=_sizes(new_rows)))
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
                   repeat: int) -> list[dict]:
    """p50, p99 and capacity per call of A and D by conversation size, and of B by the owner's conversation count."""
    with Metered(table) as metered:
        return _measure_growth(metered, table, conversations, owners, repeat)


def _measure_growth(metered: Metered, table: ddb.MessagesTable, conversations: dict[int, tuple[dict, str]],
                    owners: dict[int, dict], repeat: int) -> list[dict]:
    rows = []
    for size, (sender, group) in sorted(conversations.items()):
        def list_a(group=group, sender=sender):
            return table.is_member(group, sender["uuid"]), table.list_messages(group, limit=PAGE)

        page = len(list_a()[1]["items"])
        rows.append({"pattern": "A", "size": size, "of": "messages in the conversation", "page": page,
                     **metered.per_call(list_a, repeat)})
    for size, (sender, group) in sorted(conversations.items()):
        def append_d(group=group, sender=sender):
            assert table.is_member(group, sender["uuid"])
            return table.create_message(message_group_uuid=group, sender=sender, message="growth append")

        rows.append({"pattern": "D", "size": size, "of": "messages in the conversation", "page": None,
                     **metered.per_call(append_d, repeat)})
    for size, owner in sorted(owners.items()):
        def list_b(owner=owner):
            return table.list_message_groups(owner["uuid"], limit=PAGE)

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
