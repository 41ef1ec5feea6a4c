"""GET /api/message_groups (pattern B) and POST /api/message_groups/<group>/read (read markers)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from backend_flask import clients
from backend_flask.auth import jwt_required
from backend_flask.routes import params
from backend_flask.routes.params import page_args, paged
from backend_flask.services import message_groups, messages

bp = Blueprint("message_groups", __name__)


@bp.get("/api/message_groups")
@jwt_required
def list_message_groups() -> Response:
    """List my conversations, newest activity first; older ones through Link rel="next"."""
    limit, before = page_args()
    page = message_groups.list_message_groups(clients.get().messages, g.user, limit=limit, before=before)
    return paged(page, limit)


@bp.post("/api/message_groups/<message_group_uuid>/read")
@jwt_required
def mark_read(message_group_uuid: str) -> Response:
    """Move my read marker to a message of the conversation (default: its newest); never backwards."""
    group = params.message_group_uuid(message_group_uuid)
    created_at = params.read_marker(params.json_body(optional=True))
    c = clients.get()
    return jsonify(messages.mark_read(c.messages, g.user, group, created_at, bus=c.bus))
