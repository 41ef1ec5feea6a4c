"""Opaque page cursors: URL-safe base64 (unpadded) of the last item's key."""

from __future__ import annotations

import base64
import json
from typing import Any

from backend_flask.lib.ddb.keys import MAX_CURSOR_LENGTH, is_timestamp
from backend_flask.lib.errors import InvalidCursor


def encode_cursor(pk: str, sk: str) -> str:
    """Return the opaque cursor of a key."""
    raw = json.dumps({"pk": pk, "sk": sk}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: Any, pk: str) -> str:
    """Return the sort key a cursor of partition `pk` points at; raise InvalidCursor otherwise."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor(detail="cursor is not a short string")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise InvalidCursor(detail="cursor does not decode") from exc
    if not isinstance(data, dict) or set(data) != {"pk", "sk"}:
        raise InvalidCursor(detail="cursor has the wrong shape")
    if data["pk"] != pk:
        raise InvalidCursor(detail="cursor belongs to another list")
    if not is_timestamp(data["sk"]):
        raise InvalidCursor(detail="cursor position is not a timestamp")
    return data["sk"]
