"""The users lookup the frontend makes before starting a conversation."""

from __future__ import annotations

from backend_flask.errors import NotFoundError
from backend_flask.lib import users
from backend_flask.lib.db import Db


def user_short(db: Db, handle: str) -> dict:
    """Return {uuid, handle, display_name} of the user with this handle; raise user_not_found."""
    user = users.user_short(db, handle)
    if user is None:
        raise NotFoundError("user_not_found")
    return user
