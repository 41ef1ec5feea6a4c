"""GET /api/message_groups: my conversations (pattern B)."""

from __future__ import annotations

from flask import Blueprint, Response, g

from backend_flask import clients
from backend_flask.auth import jwt_required
from backend_flask.routes.params import page_args, paged
from backend_flask.services import message_groups

bp = Blueprint("message_groups", __name__)


@bp.get("/api/message_groups")
@jwt_required
def list_message_groups() -> Response:
    """List my conversations, newest activity first; older ones through Link rel="next"."""
    limit, before = page_args()
    page = message_groups.list_message_groups(clients.get().messages, g.user, limit=limit, before=before)
    return paged(page, limit)
