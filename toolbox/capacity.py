"""What AWS would bill for DynamoDB work, computed from items and calls with the on-demand rules.

DynamoDB Local's own ConsumedCapacity is unreliable for transactions (a
5-item TransactWriteItems reports the same 2.0 as a 1-item one) and absent
for failed calls, so the bench prices work itself, with the published rules
(Developer Guide, "DynamoDB read and write operations" and "Condition
expressions"):

- reads: 1 unit per 4 KB, half for an eventually consistent read; a GetItem
  rounds its item up, a Query rounds the sum of the items it returned; at
  least one 4 KB step per call, even when nothing is found;
- writes: 1 unit per 1 KB of the item (the larger of before and after),
  2 per 1 KB inside a transaction (ConditionCheck included);
- a global secondary index: 1 more unit per 1 KB for every index entry written
  or removed (the table's GSI projects ALL, so an entry is the item's size);
- a conditional write whose condition fails still costs write units: the size
  of the item that is there (at least one unit);
- a cancelled transaction costs the transactional units of every action it
  holds, as if it had committed; no index entry is written.

The pure functions below are the rules; `CapacityMeter` applies them to every
call a boto3 client makes; `consumed_capacity` collects DynamoDB's own figures.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable, Iterator
from typing import Any

INDEX_ATTRIBUTE = "message_group_uuid"   # the GSI's partition key: items with it are in the index
READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024


# ------------------------------------------------------------------ sizes

def attribute_size(value: dict[str, Any]) -> int:
    """Return the stored size of one attribute value, in bytes (DynamoDB's item-size rules)."""
    (kind, raw), = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return math.ceil(len(str(raw).lstrip("-").replace(".", "")) / 2) + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in raw)
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: v}) for v in raw)
    return 0


def item_size(item: dict[str, Any]) -> int:
    """Return the stored size of an item in attribute-value form: attribute names plus values."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def indexed(item: dict[str, Any]) -> bool:
    """Tell whether an item (attribute-value form) has an entry in the table's GSI."""
    return INDEX_ATTRIBUTE in item


# ------------------------------------------------------------------ rules

def read_units(size: int, *, consistent: bool) -> float:
    """Return the read units of one read that returns `size` bytes (at least one 4 KB step)."""
    steps = max(1, math.ceil(size / READ_UNIT_BYTES))
    return steps * (1.0 if consistent else 0.5)


def write_units(size: int, *, transactional: bool = False) -> int:
    """Return the write units of writing or deleting an item of `size` bytes (at least one 1 KB step)."""
    return max(1, math.ceil(size / WRITE_UNIT_BYTES)) * (2 if transactional else 1)


def index_units(item: dict[str, Any]) -> int:
    """Return the units of adding or removing the item's GSI entry (0 if it has none)."""
    return write_units(item_size(item)) if indexed(item) else 0


def get_cost(item: dict[str, Any] | None, *, consistent: bool) -> float:
    """Return the cost of reading one item by its key (a missing item costs the minimum)."""
    return read_units(item_size(item or {}), consistent=consistent)


def query_cost(items: Iterable[dict[str, Any]], *, consistent: bool) -> float:
    """Return the cost of one Query call that returned these items (their sizes summed, then rounded)."""
    return read_units(sum(item_size(i) for i in items), consistent=consistent)


def put_cost(item: dict[str, Any], *, transactional: bool = False) -> int:
    """Return the cost of putting a new item: its write units and its GSI entry."""
    return write_units(item_size(item), transactional=transactional) + index_units(item)


def delete_cost(item: dict[str, Any], *, transactional: bool = False) -> int:
    """Return the cost of deleting an item: its write units and the removal of its GSI entry."""
    return write_units(item_size(item), transactional=transactional) + index_units(item)


def failed_write_cost(existing: dict[str, Any] | None) -> int:
    """Return the cost of a conditional write whose condition failed: the item that is there, at least 1."""
    return write_units(item_size(existing or {}))


# ------------------------------------------------------------------ calls

def call_cost(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> float:
    """Return the units AWS on-demand bills for one call, answered or refused, from its request and answer."""
    error = parsed.get("Error", {}).get("Code") if isinstance(parsed.get("Error"), dict) else None
    if error == "ConditionalCheckFailedException":
        return failed_write_cost(parsed.get("Item"))
    if error == "TransactionCanceledException":
        return cancelled_transaction_cost(params["TransactItems"], parsed.get("CancellationReasons") or [])
    if error:
        return 0.0  # refused before any item was touched (validation, throttling, missing table)
    consistent = bool(params.get("ConsistentRead"))
    if operation == "GetItem":
        return get_cost(parsed.get("Item"), consistent=consistent)
    if operation in ("Query", "Scan"):
        return query_cost(parsed.get("Items", []), consistent=consistent)
    if operation == "PutItem":
        return put_cost(params["Item"])
    if operation == "UpdateItem":
        # The item's size is not in the request; priced at what the answer returns (exact for items under 1 KB).
        new = parsed.get("Attributes") or {}
        return write_units(item_size(new)) * (2 if _indexed_key(params["Key"]) else 1)
    if operation == "DeleteItem":
        # The deleted item is in the answer only with ReturnValues=ALL_OLD; else price the 1 KB minimum.
        old = parsed.get("Attributes") or {}
        return write_units(item_size(old)) + (index_units(old) or (1 if _indexed_key(params["Key"]) else 0))
    if operation == "BatchWriteItem":
        # Items handed back unprocessed were not written, and are not billed.
        unprocessed = {_request_key(r) for r in _requests(parsed.get("UnprocessedItems") or {})}
        return sum(put_cost(r["PutRequest"]["Item"]) if "PutRequest" in r else write_units(0)
                   for r in _requests(params["RequestItems"]) if _request_key(r) not in unprocessed)
    if operation == "TransactWriteItems":
        return committed_transaction_cost(params["TransactItems"])
    return 0.0


def committed_transaction_cost(actions: list[dict[str, Any]]) -> float:
    """Return the cost of a committed TransactWriteItems: 2 units per KB per action, plus index entries."""
    largest = _largest_put(actions)
    total = 0.0
    for action in actions:
        if "Put" in action:
            total += put_cost(action["Put"]["Item"], transactional=True)
        elif "Delete" in action:
            # A Delete's old item is not in the request: price it like the largest Put beside it.
            total += write_units(largest, transactional=True)
            total += write_units(largest) if _indexed_key(action["Delete"]["Key"]) else 0
        else:  # ConditionCheck, Update
            total += write_units(largest if "Update" in action else 0, transactional=True)
    return total


def cancelled_transaction_cost(actions: list[dict[str, Any]], reasons: list[dict[str, Any]]) -> float:
    """Return the cost of a cancelled TransactWriteItems: every action's transactional units, no index entries."""
    largest = _largest_put(actions)
    total = 0.0
    for index, action in enumerate(actions):
        found = reasons[index].get("Item") if index < len(reasons) else None
        if "Put" in action:
            size = max(item_size(action["Put"]["Item"]), item_size(found or {}))
        elif found:
            size = item_size(found)
        else:
            size = largest if "Delete" in action or "Update" in action else 0
        total += write_units(size, transactional=True)
    return total


def _largest_put(actions: list[dict[str, Any]]) -> int:
    return max((item_size(a["Put"]["Item"]) for a in actions if "Put" in a), default=0)


def _indexed_key(key: dict[str, Any]) -> bool:
    # Only conversation rows (pk GRP#...) carry the index attribute in this table.
    return key.get("pk", {}).get("S", "").startswith("GRP#")


def _requests(request_items: dict[str, list[dict]]) -> list[dict]:
    return [r for requests in request_items.values() for r in requests]


def _request_key(request: dict[str, Any]) -> tuple[str, str]:
    target = request["PutRequest"]["Item"] if "PutRequest" in request else request["DeleteRequest"]["Key"]
    return target["pk"]["S"], target["sk"]["S"]


class CapacityMeter:
    """Prices every call a boto3 DynamoDB client makes, failed ones included (botocore event hooks)."""

    def __init__(self, client):
        self.total = 0.0
        self.calls: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._events = client.meta.events
        self._events.register("provide-client-params.dynamodb.*", self._before)
        self._events.register("after-call.dynamodb.*", self._after)

    @staticmethod
    def _before(params, context, **_kwargs):
        context["capacity_params"] = dict(params)

    def _after(self, parsed, model, context, **_kwargs):
        cost = call_cost(model.name, context.get("capacity_params", {}), parsed)
        failed = "Error" in parsed
        with self._lock:
            self.total += cost
            self.calls.append((model.name + (" (failed)" if failed else ""), cost))

    def reset(self) -> None:
        """Forget what was priced so far."""
        with self._lock:
            self.total = 0.0
            self.calls = []

    def close(self) -> None:
        """Stop pricing the client's calls."""
        self._events.unregister("provide-client-params.dynamodb.*", self._before)
        self._events.unregister("after-call.dynamodb.*", self._after)


# Operations that can report what they consumed.
_REPORTING = {"GetItem", "Query", "Scan", "PutItem", "DeleteItem", "UpdateItem", "BatchGetItem",
              "BatchWriteItem", "TransactGetItems", "TransactWriteItems"}


@contextlib.contextmanager
def consumed_capacity(client) -> Iterator[list[dict]]:
    """Collect DynamoDB's own ConsumedCapacity of every call the client makes inside the block.

    The calls are asked to report it (`ReturnConsumedCapacity=INDEXES`) through
    botocore's event hooks, so the data-access code knows nothing of metering.
    """
    collected: list[dict] = []

    def ask(params, model, **_kwargs):
        if model.name in _REPORTING:
            params.setdefault("ReturnConsumedCapacity", "INDEXES")

    def record(parsed, model, **_kwargs):
        consumed = parsed.get("ConsumedCapacity")
        if isinstance(consumed, list):
            collected.extend(consumed)
        elif consumed:
            collected.append(consumed)

    events = client.meta.events
    events.register("provide-client-params.dynamodb.*", ask)
    events.register("after-call.dynamodb.*", record)
    try:
        yield collected
    finally:
        events.unregister("provide-client-params.dynamodb.*", ask)
        events.unregister("after-call.dynamodb.*", record)
