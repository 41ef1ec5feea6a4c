"""Key formats, timestamps and item shapes of the messages table: defined here and nowhere else."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

TABLE_NAME = "cruddur-messages"
GROUP_INDEX = "message-group-sk-index"

GROUP_PREFIX = "GRP#"
MESSAGE_PREFIX = "MSG#"
MEMBER_PREFIX = "MBR#"
IDEMPOTENCY_PREFIX = "IDEM#"
TICKET_PREFIX = "TKT#"

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_CURSOR_LENGTH = 1024
TTL_ATTRIBUTE = "expires_at"
# Namespace of pair_group_uuid(); changing it would split every existing pair's conversation.
PAIR_NAMESPACE = uuid.UUID("5b0c4a36-1f5e-5f0e-9a1e-6372756464ae")

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(\+00:00|Z)")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


# ------------------------------------------------------------------ values

def now_iso() -> str:
    """Return the current UTC time, fixed width with microseconds: 2026-11-22T08:03:06.045123+00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_iso(moment: datetime) -> str:
    """Return a datetime as this table's fixed-width UTC timestamp."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def is_timestamp(value: Any) -> bool:
    """Tell whether a value is, as a whole, a sort-key timestamp of this table."""
    return isinstance(value, str) and _TIMESTAMP.fullmatch(value) is not None


def plus_microsecond(timestamp: str) -> str:
    """Return the timestamp one microsecond later."""
    return to_iso(datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(microseconds=1))


def later(timestamp: str) -> str:
    """Return a timestamp after `timestamp`: now, or one microsecond later if the clock is behind."""
    return max(now_iso(), plus_microsecond(timestamp))


def pair_group_uuid(user_a: str, user_b: str) -> str:
    """Return the conversation id of a pair of users: the same whoever starts it."""
    first, second = sorted(canonical(u) for u in (user_a, user_b))
    return str(uuid.uuid5(PAIR_NAMESPACE, f"{first}:{second}"))


def canonical(value: str) -> str:
    """Return a uuid in its canonical form (other strings unchanged)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def is_uuid(value: Any) -> bool:
    """Tell whether a value is a uuid string of sane length."""
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def check_limit(limit: int) -> int:
    """Return a page size the caller validated; a value outside 1..100 is a programming error."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer in 1..{MAX_LIMIT}, not {limit!r}")
    return limit


def person(value: dict) -> dict[str, str]:
    """Return a participant as {uuid, display_name, handle} strings."""
    try:
        return {"uuid": str(value["uuid"]), "display_name": str(value["display_name"]),
                "handle": str(value["handle"])}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a participant needs uuid, display_name and handle: {value!r}") from exc


# -------------------------------------------------------------- item forms

def to_item(value: dict[str, Any]) -> dict[str, Any]:
    """Return a plain dict as a DynamoDB item (attribute-value form)."""
    return {k: _serializer.serialize(v) for k, v in value.items()}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """Return a DynamoDB item as a plain dict."""
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def key(pk: str, sk: str) -> dict[str, Any]:
    """Return a primary key in attribute-value form."""
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# ------------------------------------------------------------------- items

def message_item(message_group_uuid: str, sk: str, message_uuid: str, sender: dict, message: str) -> dict:
    """Return the plain message item (patterns C and D, and bulk seeding)."""
    return {"pk": MESSAGE_PREFIX + message_group_uuid, "sk": sk, "message_uuid": message_uuid, "message": message,
            "user_uuid": sender["uuid"], "user_display_name": sender["display_name"],
            "user_handle": sender["handle"]}


def row_item(*, owner: dict, other: dict, group: str, sk: str, message: str, sender: dict) -> dict:
    """Return the plain conversation row of `owner` (it shows the other participant) after a first message.

    Read state rides on the row, so listing conversations stays one Query:
    `read_at` (the owner's effective read marker: their explicit marker or
    their own newest message, whichever is later), `counted_until` (the
    newest message counted), `unread` (the other's messages in between),
    `peer_read_at` (the other's effective marker) and `v` (a version for
    optimistic updates by the stream handler).
    """
    own = owner["uuid"] == sender["uuid"]
    item = {"pk": GROUP_PREFIX + owner["uuid"], "sk": sk, "message_group_uuid": group, "message": message,
            "last_message_at": sk, "user_uuid": other["uuid"], "user_display_name": other["display_name"],
            "user_handle": other["handle"], "counted_until": sk, "unread": 0 if own else 1, "v": 1}
    item["read_at" if own else "peer_read_at"] = sk
    return item


def membership_item(group: str, user_uuid: str, created_at: str) -> dict:
    """Return the plain membership item of a participant."""
    return {"pk": MEMBER_PREFIX + group, "sk": user_uuid, "created_at": created_at}


def message_out(item: dict) -> dict:
    """Return a message item as the API shows it."""
    return {"uuid": item.get("message_uuid"), "display_name": item.get("user_display_name"),
            "handle": item.get("user_handle"), "message": item.get("message"), "created_at": item["sk"]}


def group_out(item: dict) -> dict:
    """Return a conversation row as the API shows it."""
    return {"uuid": item.get("message_group_uuid"), "display_name": item.get("user_display_name"),
            "handle": item.get("user_handle"), "message": item.get("message"),
            "created_at": item.get("last_message_at") or item["sk"],
            "unread_count": int(item.get("unread") or 0), "peer_last_read_at": item.get("peer_read_at")}


def row_time(row: dict) -> str:
    """Return the time of a conversation row's last message."""
    return row.get("last_message_at") or row["sk"]


def message_from_image(image: dict) -> dict | None:
    """Return {message_group_uuid, sk, message, sender} of a stream NEW_IMAGE if it is a message, else None."""
    pk = image.get("pk", {}).get("S", "")
    sk = image.get("sk", {}).get("S", "")
    if not pk.startswith(MESSAGE_PREFIX) or not is_timestamp(sk):
        return None
    return {"message_group_uuid": pk[len(MESSAGE_PREFIX):], "sk": sk,
            "message": image.get("message", {}).get("S", ""), "sender": image.get("user_uuid", {}).get("S")}


def read_marker_from_image(image: dict) -> dict | None:
    """Return {message_group_uuid, user_uuid, last_read_at} of a membership NEW_IMAGE with a marker, else None."""
    pk = image.get("pk", {}).get("S", "")
    marker = image.get("last_read_at", {}).get("S")
    if not pk.startswith(MEMBER_PREFIX) or not is_timestamp(marker):
        return None
    return {"message_group_uuid": pk[len(MEMBER_PREFIX):], "user_uuid": image.get("sk", {}).get("S", ""),
            "last_read_at": marker}
