"""Users in Postgres: the sub -> user lookups the API makes.

The API calls user_by_cognito_sub (through UserCache) and user_short with
the app's Db. Creating and linking users is local
tooling: `toolbox.users`. Every uuid returned is a str.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from backend_flask.lib.cache import BoundedCache
from backend_flask.lib.db import Db

log = logging.getLogger(__name__)


def _usable(value: str | None) -> bool:
    """Tell whether a client-supplied string can be looked up at all.

    Postgres text holds no NUL and psycopg cannot encode lone surrogates (JSON
    bodies can carry both): such a value matches no user, it is not an error.
    """
    if not value or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def user_by_cognito_sub(db: Db, sub: str) -> dict | None:
    """Return {uuid, handle, display_name} of the user with this Cognito sub, or None."""
    if not _usable(sub):
        return None
    return db.query_object("users/by_cognito_user_id", cognito_user_id=sub)


def user_short(db: Db, handle: str) -> dict | None:
    """Return {uuid, handle, display_name} of the user with this handle (any case), or None."""
    if not _usable(handle):
        return None
    return db.query_object("users/short", handle=handle)


class UserCache:
    """Thread-safe, time-bounded cache of user_by_cognito_sub; only users found are kept.

    A miss is never cached, so a user who signs up is seen on their next
    request. An entry lives `ttl` seconds (0 disables caching); past
    `max_size` entries the least recently used one goes.
    """

    def __init__(self, db: Db, ttl: float = 30.0, *, max_size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.db = db
        self._cache = BoundedCache(max_size=max_size, ttl=ttl, clock=clock)

    def get(self, sub: str) -> dict | None:
        """Return the user with this Cognito sub (a copy), from the cache while fresh."""
        user = self._cache.get(sub)
        if user is None:
            # Looked up outside any lock: a slow database must not serialise every request.
            user = user_by_cognito_sub(self.db, sub)
            if user is None:
                return None
            self._cache.put(sub, user)
        return dict(user)

    def invalidate(self, sub: str | None = None) -> None:
        """Forget one sub, or every entry."""
        self._cache.pop(sub)

    def __len__(self) -> int:
        return len(self._cache)
