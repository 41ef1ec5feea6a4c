"""GET /api/users/@<handle>/short: who a handle is, before starting a conversation."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from backend_flask import clients
from backend_flask.auth import jwt_required
from backend_flask.services import users

bp = Blueprint("users", __name__)


@bp.get("/api/users/@<handle>/short")
@jwt_required
def user_short(handle: str) -> Response:
    """Return {uuid, handle, display_name} of a user."""
    return jsonify(users.find_user(clients.get().db, handle))
