"""Patterns A, C and D and read state: read a conversation, start one, append, mark read. Members only.

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


def require_member(table: MessagesTable, user: dict, message_group_uuid: str, *, fresh: bool = False) -> dict:
    """Return the user's membership ({"last_read_at"?}); 404 message_group_not_found if there is none."""
    # Strongly consistent: a conversation created a moment ago is visible.
    membership = table.membership(message_group_uuid, user["uuid"], fresh=fresh)
    if membership is None:
        raise NotFound("message_group_not_found")
    return membership


def list_messages(table: MessagesTable, user: dict, message_group_uuid: str, *, limit: int,
                  before: str | None = None, bus: Bus | None = None) -> dict:
    """Return one page of a conversation the user takes part in, oldest first: {"items", "next"}.

    Opening the latest page (no `before`) marks the conversation read up to its
    newest message, as IMAP marks a message seen when it is fetched; older
    pages move nothing.
    """
    membership = require_member(table, user, message_group_uuid)
    page = table.list_messages(message_group_uuid, limit=limit, before=before)
    if before is None and page["items"]:
        _move_marker(table, user, message_group_uuid, membership, page["items"][-1]["created_at"], bus)
    return page


def mark_read(table: MessagesTable, user: dict, message_group_uuid: str, created_at: str | None = None,
              bus: Bus | None = None) -> dict:
    """Move my read marker to a message (default: the newest); return it with my unread count.

    A marker never moves backwards; a `created_at` that is no message of the
    conversation is 422 created_at_not_a_message.
    """
    # The marker as stored (another process may have moved it): the answer reports it exactly.
    membership = require_member(table, user, message_group_uuid, fresh=True)
    if created_at is None:
        target = table.newest_message_time(message_group_uuid)
    elif table.message_time(message_group_uuid, created_at) is None:
        raise Unprocessable("created_at_not_a_message")
    else:
        target = created_at
    marker = _move_marker(table, user, message_group_uuid, membership, target, bus)
    unread, _own = table.count_unread(message_group_uuid, user["uuid"], after=marker)
    return {"message_group_uuid": message_group_uuid, "last_read_at": marker, "unread_count": unread}


def _move_marker(table: MessagesTable, user: dict, message_group_uuid: str, membership: dict,
                 target: str | None, bus: Bus | None) -> str | None:
    """Move the marker forward to `target` when it is behind (a write only then); return the marker.

    A marker that moved is published as a `read` event to the other member.
    """
    current = membership.get("last_read_at")
    if target is None or (current is not None and current >= target):
        return current
    marker = table.mark_read(message_group_uuid, user["uuid"], target)
    if bus is not None and marker is not None and marker != current:
        events.publish_read(bus, message_group_uuid=message_group_uuid, reader=user, last_read_at=marker,
                            members=table.members(message_group_uuid))
    return marker


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
