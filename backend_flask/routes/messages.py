"""GET /api/messages/<group> (pattern A) and POST /api/messages (patterns C and D)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from backend_flask import clients
from backend_flask.auth import jwt_required
from backend_flask.errors import NotFoundError, Unprocessable
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
    page = messages.list_messages(c.ddb, c.table, g.user, group, limit=limit, before=before)
    return params.paged(page, limit)


@bp.post("/api/messages")
@jwt_required
def create_message() -> Response:
    """Append to a conversation (message_group_uuid) or start one with a user (handle)."""
    body = params.json_body()
    key = params.idempotency_key(body)
    errors = params.message_errors(body.get("message"))
    c = clients.get()
    if "message_group_uuid" in body:
        errors += params.message_group_uuid_errors(body["message_group_uuid"])
        if "handle" in body:
            errors.append("handle_and_message_group_uuid_exclusive")
        if errors:
            raise Unprocessable(*errors)
        created = messages.create_message(c.ddb, c.table, sender=g.user,
                                          message_group_uuid=params.message_group_uuid(body["message_group_uuid"]),
                                          message=body["message"], idempotency_key=key)
        return jsonify(created)
    errors += params.handle_errors(body.get("handle"))
    if errors:
        raise Unprocessable(*errors)
    handle = body["handle"].strip()
    if not params.handle_ok(handle):
        raise NotFoundError("user_not_found")
    created = messages.create_message_group(c.db, c.ddb, c.table, sub=g.sub, handle=handle,
                                            message=body["message"], idempotency_key=key)
    return jsonify(created)
