"""Patterns A, C and D: read a conversation, start one, append to one. Members only.

The use-case rules live here, each checked once: only a member reads or
appends (404 message_group_not_found, the same answer as for a conversation
that does not exist), a conversation needs a receiver who exists (404
user_not_found) and who is not the sender (422 cannot_message_self).
"""

from __future__ import annotations

from backend_flask.lib.db import Db
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.errors import NotFound, Unprocessable
from backend_flask.lib.pubsub import Bus
from backend_flask.services import events
from backend_flask.services.users import find_user


def require_member(table: MessagesTable, user: dict, message_group_uuid: str) -> None:
    """Raise 404 message_group_not_found unless the user takes part in the conversation."""
    # Strongly consistent: a conversation created a moment ago is visible.
    if not table.is_member(message_group_uuid, user["uuid"]):
        raise NotFound("message_group_not_found")


def list_messages(table: MessagesTable, user: dict, message_group_uuid: str, *, limit: int,
                  before: str | None = None) -> dict:
    """Return one page of a conversation the user takes part in, oldest first: {"items", "next"}."""
    require_member(table, user, message_group_uuid)
    return table.list_messages(message_group_uuid, limit=limit, before=before)


def start_conversation(db: Db, table: MessagesTable, *, sender: dict, handle: str, message: str,
                       idempotency_key: str | None = None, bus: Bus | None = None) -> dict:
    """Start (or continue) the sender's conversation with `handle`; return the message and its group."""
    receiver = find_user(db, handle)
    if receiver["uuid"] == sender["uuid"]:
        raise Unprocessable("cannot_message_self")
    created = table.create_message_group(sender=sender, receiver=receiver, message=message,
                                         idempotency_key=idempotency_key)
    events.publish_message(bus, table, message=created, sender=sender, receiver=receiver)
    return created


def append_message(table: MessagesTable, *, sender: dict, message_group_uuid: str, message: str,
                   idempotency_key: str | None = None, bus: Bus | None = None) -> dict:
    """Append to a conversation the sender takes part in."""
    require_member(table, sender, message_group_uuid)
    created = table.create_message(message_group_uuid=message_group_uuid, sender=sender, message=message,
                                   idempotency_key=idempotency_key)
    events.publish_message(bus, table, message={"message_group_uuid": message_group_uuid, **created}, sender=sender)
    return created
