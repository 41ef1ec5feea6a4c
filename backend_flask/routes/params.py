"""Parsing and validation shared by the views: pages, JSON bodies, ids, idempotency keys."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request

from backend_flask.lib import ddb
from backend_flask.lib.errors import BadRequest, Unprocessable

MAX_MESSAGE_CHARS = 1024
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Kept in messages: the only control characters a person types.
ALLOWED_CONTROLS = frozenset("\n\t")
# Bidirectional embeddings, overrides and isolates: they reorder what a reader sees ("Trojan Source").
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Letters that render as nothing; with whitespace and format characters (U+200B...) they make a message blank.
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")


def page_args() -> tuple[int, str | None]:
    """Return (limit, before) from the query string; 400 invalid_limit / invalid_cursor otherwise."""
    raw = request.args.get("limit")
    if raw is None:
        limit = ddb.DEFAULT_LIMIT
    elif raw.isascii() and raw.isdigit() and len(raw) <= len(str(ddb.MAX_LIMIT)) and 1 <= int(raw) <= ddb.MAX_LIMIT:
        limit = int(raw)
    else:
        raise BadRequest("invalid_limit")
    before = request.args.get("before")
    if before == "":
        before = None
    if before is not None and len(before) > ddb.MAX_CURSOR_LENGTH:
        raise BadRequest("invalid_cursor")
    return limit, before


def paged(page: dict, limit: int) -> Response:
    """Return the page's items as a JSON array, with a Link rel="next" header when there is more.

    The link is a relative reference (RFC 8288 resolves it against the request's
    URL), so it leads back to whichever host and port the client called, never
    to another one, whatever proxies sit in between.
    """
    response = jsonify(page["items"])
    if page.get("next"):
        query = urlencode({"limit": limit, "before": page["next"]})
        response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return response


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """Return the request's JSON object; 400 invalid_json for anything else (nesting too deep included).

    With `optional`, an empty body is an empty object.
    """
    data = request.get_data(cache=False)
    if optional and not data:
        return {}
    if not request.is_json:
        raise BadRequest("invalid_json")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: a body nested a thousand levels deep
        raise BadRequest("invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid_json")
    return body


def message_group_uuid(value: Any) -> str:
    """Return a group id in canonical form; 422 message_group_uuid_blank / _invalid otherwise."""
    errors = message_group_uuid_errors(value)
    if errors:
        raise Unprocessable(*errors)
    return str(uuid.UUID(value.strip()))


def message_group_uuid_errors(value: Any) -> list[str]:
    """Return the error codes for a conversation id (empty when it is a UUID)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ["message_group_uuid_blank"]
    if not isinstance(value, str) or len(value) > 64:
        return ["message_group_uuid_invalid"]
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return ["message_group_uuid_invalid"]
    return []


def message_errors(value: Any) -> list[str]:
    """Return the frontend's error codes for a message text (empty when it is fine).

    Blank means nothing visible: whitespace, format characters (U+200B and
    friends) and letters that render as nothing. Invalid means a character
    no person types or that changes what a reader sees: NUL and other control
    characters but newline and tab, bidirectional overrides, lone surrogates.
    The limit counts code points.
    """
    if value is None:
        return ["message_blank"]
    if not isinstance(value, str) or not _encodable(value) or any(map(_forbidden, value)):
        return ["message_invalid"]
    if all(map(_invisible, value)):
        return ["message_blank"]
    if len(value) > MAX_MESSAGE_CHARS:
        return ["message_exceed_max_chars_1024"]
    return []


def _forbidden(char: str) -> bool:
    if char in BIDI_CONTROLS:
        return True
    return unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS


def _invisible(char: str) -> bool:
    return char.isspace() or char in INVISIBLE_LETTERS or unicodedata.category(char) == "Cf"


def handle_errors(value: Any) -> list[str]:
    """Return the frontend's error codes for a receiver handle (empty when it is fine)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ["user_reciever_handle_blank"]  # sic: the frontend's spelling
    if not isinstance(value, str):
        return ["user_reciever_handle_invalid"]
    return []


@dataclass(frozen=True)
class NewMessage:
    """A validated POST /api/messages: exactly one of message_group_uuid and handle is set."""

    message: str
    message_group_uuid: str | None
    handle: str | None
    idempotency_key: str | None


def new_message(body: dict[str, Any]) -> NewMessage:
    """Validate a POST /api/messages body; raise 400/422 with every code that applies."""
    key = idempotency_key(body)
    errors = message_errors(body.get("message"))
    if "message_group_uuid" in body:
        errors += message_group_uuid_errors(body["message_group_uuid"])
        if "handle" in body:
            errors.append("handle_and_message_group_uuid_exclusive")
        if errors:
            raise Unprocessable(*errors)
        return NewMessage(body["message"], message_group_uuid(body["message_group_uuid"]), None, key)
    errors += handle_errors(body.get("handle"))
    if errors:
        raise Unprocessable(*errors)
    return NewMessage(body["message"], None, body["handle"].strip(), key)


def idempotency_key(body: dict[str, Any]) -> str | None:
    """Return the Idempotency-Key header or the body's client_message_id; 400 if malformed or they differ."""
    header = request.headers.get("Idempotency-Key")
    field = body.get("client_message_id")
    for key in (header, field):
        if key is not None and (not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key)):
            raise BadRequest("idempotency_key_invalid")
    if header is not None and field is not None and header != field:
        raise BadRequest("idempotency_key_mismatch")
    return header if header is not None else field


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON can carry
        return False
    return True


def read_marker(body: dict[str, Any]) -> str | None:
    """Return the optional `created_at` of a mark-read body; 422 created_at_invalid if it is no timestamp."""
    value = body.get("created_at")
    if value is None:
        return None
    if not ddb.is_timestamp(value):
        raise Unprocessable("created_at_invalid")
    return value
