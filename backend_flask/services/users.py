"""Who a handle names: the lookup the frontend makes before starting a conversation."""

from __future__ import annotations

from backend_flask.lib import users
from backend_flask.lib.db import Db
from backend_flask.lib.errors import NotFound

MAX_HANDLE_CHARS = 100


def could_be_handle(handle: str) -> bool:
    """Tell whether a string could name a user at all (short, printable, encodable)."""
    if not 0 < len(handle) <= MAX_HANDLE_CHARS or not handle.isprintable():
        return False
    try:
        handle.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON can carry
        return False
    return True


def find_user(db: Db, handle: str) -> dict:
    """Return {uuid, handle, display_name} of the user with this handle (any case); 404 user_not_found."""
    handle = handle.strip().lstrip("@") if isinstance(handle, str) else ""
    user = users.user_short(db, handle) if could_be_handle(handle) else None
    if user is None:
        raise NotFound("user_not_found")
    return user
