"""Parsing and validation shared by the views: pages, JSON bodies, ids, idempotency keys."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, jsonify, request

from backend_flask.errors import BadRequest, NotFoundError, Unprocessable
from backend_flask.lib import ddb

MAX_MESSAGE_CHARS = 1024
MAX_HANDLE_CHARS = 100
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
    """Return the page's items as a JSON array, with a Link rel="next" header when there is more."""
    response = jsonify(page["items"])
    if page.get("next"):
        base = current_app.config["CRUDDUR"].backend_url.rstrip("/")
        query = urlencode({"limit": limit, "before": page["next"]})
        response.headers["Link"] = f'<{base}{request.path}?{query}>; rel="next"'
    return response


def json_body() -> dict[str, Any]:
    """Return the request's JSON object; 400 invalid_json for anything else."""
    body = request.get_json(silent=True)
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
    """Return the frontend's error codes for a message text (empty when it is fine)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ["message_blank"]
    if not isinstance(value, str) or not _encodable(value):
        return ["message_invalid"]
    if len(value) > MAX_MESSAGE_CHARS:
        return ["message_exceed_max_chars_1024"]
    return []


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
    """Validate a POST /api/messages body; raise 400/422 with every code that applies, or 404 user_not_found."""
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
    handle = body["handle"].strip()
    if not handle_ok(handle):
        raise NotFoundError("user_not_found")
    return NewMessage(body["message"], None, handle, key)


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


def handle_ok(handle: str) -> bool:
    """Tell whether a handle could name a user at all (short, printable, encodable)."""
    return 0 < len(handle) <= MAX_HANDLE_CHARS and handle.isprintable() and _encodable(handle)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON can carry
        return False
    return True
