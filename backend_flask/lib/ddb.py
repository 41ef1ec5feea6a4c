"""The `cruddur-messages` table: its definition and its access patterns (A–E).

Stateless functions over a boto3 DynamoDB client, returning plain dicts. Key
formats, the table and the index name are defined here and nowhere else.

Items of the table (pk / sk, then what else they hold):

- conversation row, one per participant: `GRP#<owner uuid>` / position (the
  last message's time); `message_group_uuid`, `message`, `last_message_at`
  and the OTHER participant's `user_uuid`, `user_display_name`, `user_handle`.
- message: `MSG#<group uuid>` / created time; `message_uuid`, `message` and the
  sender's `user_uuid`, `user_display_name`, `user_handle`.
- membership: `MBR#<group uuid>` / member's user uuid; `created_at`. Written
  with the conversation, read strongly consistent, checked inside pattern D.
- idempotency: `IDEM#<sender uuid>` / the client's key; `result` (a map, the
  first call's answer) and `expires_at` (TTL, one day).

Only conversation rows carry a top-level `message_group_uuid`, so the GSI
`message-group-sk-index` holds nothing but conversation rows.

A pair of users has exactly one conversation: its id is `pair_group_uuid()`
(uuid5 of the sorted pair) and pattern C's transaction puts both membership
items with `attribute_not_exists`, so a second C for the same pair (even at
the same moment) fails that condition and appends to the conversation instead.

A conversation row's position (`sk`) equals the time of its last message
unless another conversation of the same owner already sits at that exact
microsecond; then the row moves one microsecond later, and `last_message_at`
keeps the true time, which is what "only forward" compares.

Membership is read strongly consistent (`is_member`); D reads it itself before
its conditional put, so a caller of D needs no read of its own.
Pages of A and B are eventually consistent reads (half the cost); B shows
what the asynchronous pattern E wrote anyway.

Cursors are URL-safe base64 (unpadded) of `{"pk": ..., "sk": ...}`: the key
of the last item of the page; anything else raises InvalidCursor. `limit` is
clamped into 1..100 (None means 20); a non-integer raises ValueError.

Failed conditions come back as TransactionCanceledException with one reason
per item; each pattern reads its reasons to tell "already exists" (fall back
or return the first result) from "same microsecond" (take the next one) from
a conflict (back off and retry). Connection failures and throttling that
outlast the client's retries raise DynamoDBUnavailable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from backend_flask.lib.errors import Conflict, DynamoDBUnavailable, InvalidCursor, NotFound

log = logging.getLogger(__name__)

TABLE_NAME = "cruddur-messages"
GROUP_INDEX = "message-group-sk-index"

GROUP_PREFIX = "GRP#"
MESSAGE_PREFIX = "MSG#"
MEMBER_PREFIX = "MBR#"
IDEMPOTENCY_PREFIX = "IDEM#"

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_CURSOR_LENGTH = 1024
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
TTL_ATTRIBUTE = "expires_at"
# Namespace of pair_group_uuid(); changing it would split every existing pair's conversation.
PAIR_NAMESPACE = uuid.UUID("5b0c4a36-1f5e-5f0e-9a1e-6372756464ae")

# Attempts for transactions cancelled by a conflict or throttling, or by a sort-key collision.
WRITE_ATTEMPTS = 8
# Re-queries of the GSI when pattern E finds its view stale (rows moved or not indexed yet).
MOVE_ATTEMPTS = 6

_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                      "RequestLimitExceeded"}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(\+00:00|Z)$")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def table_definition(table_name: str = TABLE_NAME) -> dict[str, Any]:
    """Return the CreateTable arguments: pk/sk, the group GSI, stream NEW_IMAGE, on demand."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "message_group_uuid", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [{
            "IndexName": GROUP_INDEX,
            "KeySchema": [
                {"AttributeName": "message_group_uuid", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


@contextlib.contextmanager
def translate_errors():
    """Turn a DynamoDB that cannot be reached into DynamoDBUnavailable."""
    try:
        yield
    except BotoConnectionError as exc:
        raise DynamoDBUnavailable(f"DynamoDB unreachable: {exc}") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise NotFound(f"table missing: {exc}", code="table_not_found") from exc
        if code in {"ProvisionedThroughputExceededException", "ThrottlingException",
                    "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"}:
            raise DynamoDBUnavailable(f"DynamoDB busy: {code}") from exc
        raise
    except BotoCoreError as exc:
        raise DynamoDBUnavailable(f"DynamoDB failed: {exc}") from exc


def create_table(client, table_name: str = TABLE_NAME) -> bool:
    """Create the table and wait until it is active; return False if it already existed."""
    with translate_errors():
        try:
            client.create_table(**table_definition(table_name))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceInUseException":
                return False
            raise
        client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})
        # Idempotency items expire on their own; a table without TTL still works, it only keeps them.
        try:
            client.update_time_to_live(TableName=table_name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
        except ClientError as exc:
            log.warning("could not enable TTL on %s: %s", table_name, exc)
    log.info("created table %s", table_name)
    return True


def delete_table(client, table_name: str = TABLE_NAME) -> bool:
    """Delete the table; return False if it did not exist."""
    with translate_errors():
        try:
            client.delete_table(TableName=table_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return False
            raise
        client.get_waiter("table_not_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})
    return True


def ping(client, table_name: str = TABLE_NAME) -> None:
    """Raise DynamoDBUnavailable or NotFound unless the table answers."""
    with translate_errors():
        client.describe_table(TableName=table_name)


def list_tables(client) -> list[str]:
    """Return the names of every table the endpoint has."""
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    with translate_errors():
        while True:
            response = client.list_tables(**kwargs)
            names.extend(response.get("TableNames", []))
            if not response.get("LastEvaluatedTableName"):
                return names
            kwargs["ExclusiveStartTableName"] = response["LastEvaluatedTableName"]


def scan_items(client, table: str, *, limit: int | None = None, capacity: list | None = None) -> Iterator[dict]:
    """Yield every item of the table as a plain dict (for tools, never for the API)."""
    kwargs: dict[str, Any] = {"TableName": table, "ReturnConsumedCapacity": "TOTAL"}
    seen = 0
    with translate_errors():
        while True:
            response = client.scan(**kwargs)
            _record(capacity, response)
            for item in response.get("Items", []):
                yield from_item(item)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


# ------------------------------------------------------------------ values

def now_iso() -> str:
    """Return the current UTC time, fixed width with microseconds: 2026-11-22T08:03:06.045123+00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_iso(moment: datetime) -> str:
    """Return a datetime as this table's fixed-width UTC timestamp."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def is_timestamp(value: Any) -> bool:
    """Tell whether a value looks like a sort-key timestamp of this table."""
    return isinstance(value, str) and bool(_TIMESTAMP.match(value))


def _plus_microsecond(timestamp: str) -> str:
    return to_iso(datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(microseconds=1))


def _later(timestamp: str) -> str:
    """Return a timestamp after `timestamp`: now, or one microsecond later if the clock is behind."""
    return max(now_iso(), _plus_microsecond(timestamp))


def pair_group_uuid(user_a: str, user_b: str) -> str:
    """Return the conversation id of a pair of users: the same whoever starts it."""
    first, second = sorted(_canonical(u) for u in (user_a, user_b))
    return str(uuid.uuid5(PAIR_NAMESPACE, f"{first}:{second}"))


def _canonical(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def clamp_limit(limit: Any) -> int:
    """Return the page size clamped into 1..100 (None means 20); raise ValueError if not an integer."""
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, bool):
        raise ValueError(f"limit must be an integer, not {limit!r}")
    try:
        number = int(limit)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"limit must be an integer, not {limit!r}") from exc
    return max(1, min(MAX_LIMIT, number))


def _person(person: dict) -> dict[str, str]:
    try:
        return {"uuid": str(person["uuid"]), "display_name": str(person["display_name"]),
                "handle": str(person["handle"])}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a participant needs uuid, display_name and handle: {person!r}") from exc


def to_item(value: dict[str, Any]) -> dict[str, Any]:
    """Return a plain dict as a DynamoDB item (attribute-value form)."""
    return {k: _serializer.serialize(v) for k, v in value.items()}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """Return a DynamoDB item as a plain dict."""
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _record(capacity: list | None, response: dict) -> None:
    if capacity is None:
        return
    consumed = response.get("ConsumedCapacity")
    if isinstance(consumed, list):
        capacity.extend(consumed)
    elif consumed:
        capacity.append(consumed)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))


# ----------------------------------------------------------------- cursors

def encode_cursor(pk: str, sk: str) -> str:
    """Return the opaque cursor of a key."""
    raw = json.dumps({"pk": pk, "sk": sk}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: Any, pk: str) -> str:
    """Return the sort key a cursor of partition `pk` points at; raise InvalidCursor otherwise."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is not a short string")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise InvalidCursor("cursor does not decode") from exc
    if not isinstance(data, dict) or set(data) != {"pk", "sk"}:
        raise InvalidCursor("cursor has the wrong shape")
    if data["pk"] != pk:
        raise InvalidCursor("cursor belongs to another list")
    if not is_timestamp(data["sk"]):
        raise InvalidCursor("cursor position is not a timestamp")
    return data["sk"]


def _page(client, table: str, pk: str, limit: int, before: str | None, capacity: list | None) -> dict:
    """Query one partition newest first: up to `limit` items and the cursor of the rest."""
    condition = "pk = :pk"
    values: dict[str, Any] = {":pk": {"S": pk}}
    if before is not None:
        condition += " AND sk < :before"
        values[":before"] = {"S": decode_cursor(before, pk)}
    kwargs: dict[str, Any] = {"TableName": table, "KeyConditionExpression": condition,
                              "ExpressionAttributeValues": values, "ScanIndexForward": False,
                              "ReturnConsumedCapacity": "TOTAL"}
    items: list[dict] = []
    # One item more than the page tells whether an older page exists, so `next` is None on the last page.
    with translate_errors():
        while len(items) <= limit:
            kwargs["Limit"] = limit + 1 - len(items)
            response = client.query(**kwargs)
            _record(capacity, response)
            items.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    page = items[:limit]
    more = len(items) > limit
    return {"items": page, "next": encode_cursor(pk, page[-1]["sk"]) if more and page else None}


# ----------------------------------------------------------- transactions

def _transact(client, items: list[dict], capacity: list | None) -> list[dict] | None:
    """Run TransactWriteItems; return None on success or the cancellation reasons, one per item."""
    with translate_errors():
        try:
            response = client.transact_write_items(TransactItems=items, ReturnConsumedCapacity="TOTAL")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            return reasons if len(reasons) == len(items) else [{"Code": "Unknown"}] * len(items)
    _record(capacity, response)
    return None


def _failed(reasons: list[dict], index: int) -> bool:
    return reasons[index].get("Code") == "ConditionalCheckFailed"


def _retryable(reasons: list[dict]) -> bool:
    return any(r.get("Code") in _RETRYABLE_REASONS for r in reasons)


def _cancelled(what: str, reasons: list[dict]) -> DynamoDBUnavailable:
    codes = [r.get("Code") for r in reasons]
    log.warning("%s cancelled: %s", what, codes)
    return DynamoDBUnavailable(f"{what} cancelled: {codes}")


def _idempotency_key(key: str | None) -> str | None:
    """Return the sort key of an idempotency item (None when no key was given)."""
    if key is None or key == "":
        return None
    if not isinstance(key, str):
        raise ValueError("idempotency_key must be a string")
    return key if len(key.encode()) <= 256 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _fingerprint(group: str, message: str) -> str:
    """What an idempotency key promises: this text into this conversation (the same for C and D)."""
    return hashlib.sha256(f"{group}\n{message}".encode()).hexdigest()


def _idempotency_put(table: str, sender_uuid: str, key: str, result: dict) -> dict:
    fingerprint = _fingerprint(result["message_group_uuid"], result["message"])
    item = {"pk": IDEMPOTENCY_PREFIX + sender_uuid, "sk": key, "result": result, "request": fingerprint,
            TTL_ATTRIBUTE: int(time.time()) + IDEMPOTENCY_TTL_SECONDS}
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}


def _first_result(client, table: str, sender_uuid: str, key: str, reason: dict,
                  capacity: list | None, *, group: str, message: str) -> dict:
    """Return the result stored by the first call with this idempotency key.

    A key reused for another text or conversation raises Conflict: answering
    with the first result would silently drop the new message.
    """
    item = reason.get("Item")
    if not item:
        with translate_errors():
            response = client.get_item(TableName=table, Key=_key(IDEMPOTENCY_PREFIX + sender_uuid, key),
                                       ConsistentRead=True, ReturnConsumedCapacity="TOTAL")
        _record(capacity, response)
        item = response.get("Item")
        if not item:
            raise Conflict("idempotency item vanished", code="idempotency_key_expired")
    stored = from_item(item)
    if stored.get("request", _fingerprint(group, message)) != _fingerprint(group, message):
        raise Conflict("idempotency key already used for another message", code="idempotency_key_reused")
    return dict(stored["result"])


# --------------------------------------------------------------- patterns

def list_messages(client, table: str, message_group_uuid: str, *, limit: int = DEFAULT_LIMIT,
                  before: str | None = None, capacity: list | None = None) -> dict:
    """A: return one page of a conversation, oldest first, and the cursor of the older page."""
    limit = clamp_limit(limit)
    if not _is_uuid(message_group_uuid):
        raise NotFound("no such conversation", code="message_group_not_found")
    page = _page(client, table, MESSAGE_PREFIX + message_group_uuid, limit, before, capacity)
    return {"items": [_message_out(item) for item in reversed(page["items"])], "next": page["next"]}


def list_message_groups(client, table: str, user_uuid: str, *, limit: int = DEFAULT_LIMIT,
                        before: str | None = None, capacity: list | None = None) -> dict:
    """B: return one page of a user's conversations, newest activity first, and the next cursor."""
    limit = clamp_limit(limit)
    if not user_uuid or not isinstance(user_uuid, str) or len(user_uuid) > 128:
        raise ValueError("user_uuid must be a non-empty string")
    page = _page(client, table, GROUP_PREFIX + user_uuid, limit, before, capacity)
    return {"items": [_group_out(item) for item in page["items"]], "next": page["next"]}


def _message_out(item: dict) -> dict:
    return {"uuid": item.get("message_uuid"), "display_name": item.get("user_display_name"),
            "handle": item.get("user_handle"), "message": item.get("message"), "created_at": item["sk"]}


def _group_out(item: dict) -> dict:
    return {"uuid": item.get("message_group_uuid"), "display_name": item.get("user_display_name"),
            "handle": item.get("user_handle"), "message": item.get("message"),
            "created_at": item.get("last_message_at") or item["sk"]}


def is_member(client, table: str, message_group_uuid: str, user_uuid: str, *,
              capacity: list | None = None) -> bool:
    """Tell whether the user takes part in the conversation (strongly consistent read)."""
    if not _is_uuid(message_group_uuid) or not user_uuid or not isinstance(user_uuid, str) or len(user_uuid) > 128:
        return False
    with translate_errors():
        response = client.get_item(TableName=table, Key=_key(MEMBER_PREFIX + message_group_uuid, user_uuid),
                                   ConsistentRead=True, ProjectionExpression="pk",
                                   ReturnConsumedCapacity="TOTAL")
    _record(capacity, response)
    return "Item" in response


def create_message_group(client, table: str, *, sender: dict, receiver: dict, message: str,
                         idempotency_key: str | None = None, capacity: list | None = None) -> dict:
    """C: start the pair's conversation with a first message, or append if it already exists."""
    sender, receiver = _person(sender), _person(receiver)
    if _canonical(sender["uuid"]) == _canonical(receiver["uuid"]):
        raise Conflict("a conversation needs two different users", code="message_group_self")
    key = _idempotency_key(idempotency_key)
    group = pair_group_uuid(sender["uuid"], receiver["uuid"])
    message_uuid = str(uuid.uuid4())
    sk = now_iso()
    for attempt in range(WRITE_ATTEMPTS):
        result = {"message_group_uuid": group, "uuid": message_uuid, "display_name": sender["display_name"],
                  "handle": sender["handle"], "message": message, "created_at": sk}
        items = [_membership_put(table, group, sender["uuid"], sk),
                 _membership_put(table, group, receiver["uuid"], sk),
                 _row_put(table, owner=sender, other=receiver, group=group, sk=sk, message=message),
                 _row_put(table, owner=receiver, other=sender, group=group, sk=sk, message=message),
                 _message_put(table, group, sk, message_uuid, sender, message)]
        if key:
            items.append(_idempotency_put(table, sender["uuid"], key, result))
        reasons = _transact(client, items, capacity)
        if reasons is None:
            log.info("created conversation %s", group)
            return result
        if key and _failed(reasons, 5):
            return _first_result(client, table, sender["uuid"], key, reasons[5], capacity, group=group,
                                 message=message)
        if _failed(reasons, 0) or _failed(reasons, 1):
            # The pair already talks (perhaps started by the other one a moment ago): append instead.
            appended = create_message(client, table, message_group_uuid=group, sender=sender, message=message,
                                      idempotency_key=idempotency_key, capacity=capacity)
            return {"message_group_uuid": group, **appended}
        if any(_failed(reasons, i) for i in (2, 3, 4)):
            sk = _later(sk)  # another conversation row of an owner sits at this microsecond
        elif _retryable(reasons):
            _backoff(attempt)
            sk = _later(sk)
        else:
            raise _cancelled("create_message_group", reasons)
    raise DynamoDBUnavailable("create_message_group: too many conflicting writes")


def create_message(client, table: str, *, message_group_uuid: str, sender: dict, message: str,
                   idempotency_key: str | None = None, capacity: list | None = None) -> dict:
    """D: append a message if the sender is a member; never overwrite one with the same timestamp.

    Membership is one strongly consistent GetItem, then the message is one
    PutItem conditional on its key being free (1 RCU + 1 WCU, where a
    transaction with a ConditionCheck would cost 4 WCU). Check-then-put is
    safe because a membership is never removed. With an idempotency key the
    message and the key's item go together in one transaction.
    """
    sender = _person(sender)
    if not is_member(client, table, message_group_uuid, sender["uuid"], capacity=capacity):
        raise NotFound("sender is not in this conversation", code="message_group_not_found")
    key = _idempotency_key(idempotency_key)
    group = message_group_uuid
    message_uuid = str(uuid.uuid4())
    sk = now_iso()
    for attempt in range(WRITE_ATTEMPTS):
        result = {"uuid": message_uuid, "display_name": sender["display_name"], "handle": sender["handle"],
                  "message": message, "created_at": sk}
        put = _message_put(table, group, sk, message_uuid, sender, message)
        if key is None:
            if _put(client, put["Put"], capacity):
                return result
            sk = _later(sk)  # same microsecond as another message: take the next one, never overwrite
            continue
        reasons = _transact(client, [put, _idempotency_put(table, sender["uuid"], key,
                                                           {"message_group_uuid": group, **result})], capacity)
        if reasons is None:
            return result
        if _failed(reasons, 1):
            first = _first_result(client, table, sender["uuid"], key, reasons[1], capacity, group=group,
                                  message=message)
            first.pop("message_group_uuid", None)
            return first
        if _failed(reasons, 0):
            sk = _later(sk)
        elif _retryable(reasons):
            _backoff(attempt)
            sk = _later(sk)
        else:
            raise _cancelled("create_message", reasons)
    raise DynamoDBUnavailable("create_message: too many conflicting writes")


def _put(client, put: dict, capacity: list | None) -> bool:
    """Run one conditional PutItem; return False if its condition failed."""
    with translate_errors():
        try:
            response = client.put_item(**put, ReturnConsumedCapacity="TOTAL")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False
    _record(capacity, response)
    return True


def _membership_put(table: str, group: str, user_uuid: str, sk: str) -> dict:
    item = {"pk": MEMBER_PREFIX + group, "sk": user_uuid, "created_at": sk}
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(pk)"}}


def _row_put(table: str, *, owner: dict, other: dict, group: str, sk: str, message: str) -> dict:
    item = {"pk": GROUP_PREFIX + owner["uuid"], "sk": sk, "message_group_uuid": group, "message": message,
            "last_message_at": sk, "user_uuid": other["uuid"], "user_display_name": other["display_name"],
            "user_handle": other["handle"]}
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(pk)"}}


def message_item(message_group_uuid: str, sk: str, message_uuid: str, sender: dict, message: str) -> dict:
    """Return the plain message item of pattern D (and of bulk seeding)."""
    return {"pk": MESSAGE_PREFIX + message_group_uuid, "sk": sk, "message_uuid": message_uuid, "message": message,
            "user_uuid": sender["uuid"], "user_display_name": sender["display_name"],
            "user_handle": sender["handle"]}


def _message_put(table: str, group: str, sk: str, message_uuid: str, sender: dict, message: str) -> dict:
    item = message_item(group, sk, message_uuid, sender, message)
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": "attribute_not_exists(pk)"}}


# -------------------------------------------------------------- pattern E

def message_from_image(image: dict) -> dict | None:
    """Return {message_group_uuid, sk, message} of a stream NEW_IMAGE if it is a message, else None."""
    pk = image.get("pk", {}).get("S", "")
    sk = image.get("sk", {}).get("S", "")
    if not pk.startswith(MESSAGE_PREFIX) or not is_timestamp(sk):
        return None
    return {"message_group_uuid": pk[len(MESSAGE_PREFIX):], "sk": sk,
            "message": image.get("message", {}).get("S", "")}


def move_message_groups(client, table: str, message_group_uuid: str, sk: str, message: str, *,
                        capacity: list | None = None) -> int:
    """E: move the conversation rows of a group forward to (sk, message); return how many moved.

    Idempotent and safe to race: each move is a Delete+Put transaction
    conditional on the row still being where the GSI showed it and older than
    `sk`. A stale index view makes the condition fail, and the index is read
    again. Raises DynamoDBUnavailable if the index stays stale, so the caller
    retries the record later.
    """
    if not is_timestamp(sk):
        raise ValueError(f"not a message timestamp: {sk!r}")
    moved = 0
    for attempt in range(MOVE_ATTEMPTS):
        rows = _group_rows(client, table, message_group_uuid, capacity)
        settled = True
        for row in rows.values():
            if _row_time(row) >= sk:
                continue
            if _move_row(client, table, message_group_uuid, row, sk, message, capacity):
                moved += 1
            else:
                settled = False
        if settled and (len(rows) >= 2 or not _unindexed_members(client, table, message_group_uuid, rows,
                                                                  capacity)):
            return moved
        _backoff(attempt + 2)
    raise DynamoDBUnavailable(f"conversation rows of {message_group_uuid} kept moving or are not indexed yet")


def _row_time(row: dict) -> str:
    return row.get("last_message_at") or row["sk"]


def _group_rows(client, table: str, group: str, capacity: list | None) -> dict[str, dict]:
    """Return the GSI's view of a group's conversation rows: the newest one seen per owner."""
    kwargs: dict[str, Any] = {"TableName": table, "IndexName": GROUP_INDEX,
                              "KeyConditionExpression": "message_group_uuid = :g",
                              "ExpressionAttributeValues": {":g": {"S": group}},
                              "ReturnConsumedCapacity": "INDEXES"}
    rows: dict[str, dict] = {}
    with translate_errors():
        while True:
            response = client.query(**kwargs)
            _record(capacity, response)
            for item in map(from_item, response.get("Items", [])):
                # A lagging index may still show a row's old position next to its new one.
                if item["pk"].startswith(GROUP_PREFIX) and item["sk"] > rows.get(item["pk"], {}).get("sk", ""):
                    rows[item["pk"]] = item
            if "LastEvaluatedKey" not in response:
                return rows
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _unindexed_members(client, table: str, group: str, rows: dict[str, dict], capacity: list | None) -> set[str]:
    """Return the members whose conversation row the index does not show yet (read consistently)."""
    with translate_errors():
        response = client.query(TableName=table, KeyConditionExpression="pk = :pk",
                                ExpressionAttributeValues={":pk": {"S": MEMBER_PREFIX + group}},
                                ConsistentRead=True, ProjectionExpression="sk", ReturnConsumedCapacity="TOTAL")
    _record(capacity, response)
    members = {item["sk"]["S"] for item in response.get("Items", [])}
    return {m for m in members if GROUP_PREFIX + m not in rows}


def _move_row(client, table: str, group: str, row: dict, sk: str, message: str, capacity: list | None) -> bool:
    """Move one conversation row to (sk, message) in one transaction; False if it was not where we saw it."""
    old_sk = row["sk"]
    target = sk if sk > old_sk else _plus_microsecond(old_sk)
    for _ in range(WRITE_ATTEMPTS):
        moved = {**row, "sk": target, "message": message, "last_message_at": sk}
        reasons = _transact(client, [
            {"Delete": {
                "TableName": table, "Key": _key(row["pk"], old_sk),
                "ConditionExpression": "message_group_uuid = :g AND (last_message_at < :t OR "
                                       "(attribute_not_exists(last_message_at) AND sk < :t))",
                "ExpressionAttributeValues": {":g": {"S": group}, ":t": {"S": sk}}}},
            {"Put": {"TableName": table, "Item": to_item(moved), "ConditionExpression": "attribute_not_exists(pk)"}},
        ], capacity)
        if reasons is None:
            return True
        if _failed(reasons, 0) or _retryable(reasons):
            return False  # moved by someone else, or not ours to move: look again
        if _failed(reasons, 1):
            target = _plus_microsecond(target)  # another conversation of this owner sits there
            continue
        raise _cancelled("move_message_groups", reasons)
    return False
