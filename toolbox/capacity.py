"""What AWS would bill for each DynamoDB call, computed from the request and the answer.

DynamoDB Local's own ConsumedCapacity is unreliable for transactions (a
5-item TransactWriteItems reports the same 2.0 as a 1-item one), so the bench
prices calls with the published on-demand rules instead:
reads 1 unit per 4 KB (half for eventually consistent; at least one unit per
call), writes 1 unit per 1 KB, transactional writes and condition checks 2 per
1 KB, and every write that adds or removes an index entry 1 more per 1 KB
(index updates propagate after a transaction, as plain writes).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

INDEX_ATTRIBUTE = "message_group_uuid"   # the GSI's partition key: items with it are in the index


def attribute_size(value: dict[str, Any]) -> int:
    """Approximate stored size of one attribute value, in bytes."""
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
    """Approximate stored size of an item: attribute names plus values."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def _kb(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def units_to_read(size: int, consistent: bool) -> float:
    """Read units for this many bytes: one per 4 KB (half if eventually consistent), at least one."""
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def call_cost(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> float:
    """Return the capacity units AWS on-demand would bill for one successful call."""
    if operation == "GetItem":
        return units_to_read(item_size(parsed.get("Item", {})), bool(params.get("ConsistentRead")))
    if operation in ("Query", "Scan"):
        size = sum(item_size(i) for i in parsed.get("Items", []))
        return units_to_read(size, bool(params.get("ConsistentRead")))
    if operation == "PutItem":
        item = params["Item"]
        return _kb(item_size(item)) * (2 if INDEX_ATTRIBUTE in item else 1)
    if operation == "BatchWriteItem":
        return sum(_kb(item_size(r["PutRequest"]["Item"])) * (2 if INDEX_ATTRIBUTE in r["PutRequest"]["Item"] else 1)
                   for requests in params["RequestItems"].values() for r in requests if "PutRequest" in r)
    if operation == "TransactWriteItems":
        actions = params["TransactItems"]
        # A Delete's old item is not in the request: price it like the largest Put beside it.
        largest = max((item_size(a["Put"]["Item"]) for a in actions if "Put" in a), default=100)
        total = 0.0
        for action in actions:
            if "Put" in action:
                size = item_size(action["Put"]["Item"])
                total += 2 * _kb(size) + (_kb(size) if INDEX_ATTRIBUTE in action["Put"]["Item"] else 0)
            elif "Delete" in action:
                indexed = action["Delete"]["Key"]["pk"]["S"].startswith("GRP#")
                total += 2 * _kb(largest) + (_kb(largest) if indexed else 0)
            elif "ConditionCheck" in action:
                total += 2
            elif "Update" in action:
                total += 2 * _kb(largest)
        return total
    return 0.0


class CapacityMeter:
    """Prices every call a boto3 DynamoDB client makes (hooked on botocore's events)."""

    def __init__(self, client):
        self.total = 0.0
        self.calls: list[tuple[str, float]] = []
        self._pending = threading.local()
        client.meta.events.register("provide-client-params.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.*", self._after)

    def _before(self, params, model, **_kwargs):
        self._pending.call = (model.name, dict(params))

    def _after(self, http_response, parsed, model, **_kwargs):
        name, params = getattr(self._pending, "call", (model.name, {}))
        if http_response.status_code == 200:
            cost = call_cost(name, params, parsed)
            self.total += cost
            self.calls.append((name, cost))

    def reset(self) -> None:
        self.total = 0.0
        self.calls = []


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
