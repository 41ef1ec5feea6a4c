"""Patterns A, C and D: read a conversation, start one, append to one; members only."""

from __future__ import annotations

from typing import Any

from backend_flask.errors import NotFoundError, Unauthorized, Unprocessable
from backend_flask.lib import ddb, users
from backend_flask.lib.db import Db


def list_messages(ddb_client: Any, table: str, user: dict, message_group_uuid: str, *, limit: int,
                  before: str | None = None) -> dict:
    """Return one page of a conversation the user takes part in, oldest first: {"items", "next"}."""
    # Strongly consistent membership read: a conversation created a moment ago is visible.
    if not ddb.is_member(ddb_client, table, message_group_uuid, user["uuid"]):
        raise NotFoundError("message_group_not_found")
    return ddb.list_messages(ddb_client, table, message_group_uuid, limit=limit, before=before)


def create_message_group(db: Db, ddb_client: Any, table: str, *, sub: str, handle: str, message: str,
                         idempotency_key: str | None = None) -> dict:
    """Start (or continue) the sender's conversation with `handle`; return the message and its group."""
    people = users.create_message_users(db, sub, handle)
    sender, receiver = people["sender"], people["receiver"]
    if sender is None:
        raise Unauthorized("user_not_registered")
    if receiver is None:
        raise NotFoundError("user_not_found")
    if sender["uuid"] == receiver["uuid"]:
        raise Unprocessable("cannot_message_self")
    return ddb.create_message_group(ddb_client, table, sender=sender, receiver=receiver, message=message,
                                    idempotency_key=idempotency_key)


def create_message(ddb_client: Any, table: str, *, sender: dict, message_group_uuid: str, message: str,
                   idempotency_key: str | None = None) -> dict:
    """Append to a conversation the sender takes part in; a non-member gets message_group_not_found."""
    return ddb.create_message(ddb_client, table, message_group_uuid=message_group_uuid, sender=sender,
                              message=message, idempotency_key=idempotency_key)
