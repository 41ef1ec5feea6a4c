"""GET /api/messages/<group> (pattern A) and POST /api/messages (patterns C and D)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from backend_flask import clients
from backend_flask.auth import jwt_required
from backend_flask.routes import params
from backend_flask.services import messages

bp = Blueprint("messages", __name__)


@bp.get("/api/messages/<message_group_uuid>")
@jwt_required
def list_messages(message_group_uuid: str) -> Response:
    """List the latest page of a conversation I am in, oldest first; older ones through Link."""
    group = params.message_group_uuid(message_group_uuid)
    limit, before = params.page_args()
    c = clients.get()
    page = messages.list_messages(c.messages, g.user, group, limit=limit, before=before, bus=c.bus)
    return params.paged(page, limit)


@bp.post("/api/messages")
@jwt_required
def create_message() -> Response:
    """Append to a conversation (message_group_uuid) or start one with a user (handle)."""
    new = params.new_message(params.json_body())
    c = clients.get()
    if new.message_group_uuid is not None:
        created = messages.append_message(c.messages, sender=g.user, message_group_uuid=new.message_group_uuid,
                                          message=new.message, idempotency_key=new.idempotency_key, bus=c.bus)
    else:
        created = messages.start_conversation(c.db, c.messages, sender=g.user, handle=new.handle,
                                              message=new.message, idempotency_key=new.idempotency_key, bus=c.bus)
    return jsonify(created)
