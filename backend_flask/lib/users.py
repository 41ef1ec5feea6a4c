"""Users in Postgres: the sub -> user lookups the API makes.

The API calls user_by_cognito_sub (through UserCache) and user_short with
the app's Db. Creating and linking users is local
tooling: `toolbox.users`. Every uuid returned is a str.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

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
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sub: str) -> dict | None:
        """Return the user with this Cognito sub (a copy), from the cache while fresh."""
        with self._lock:
            entry = self._entries.get(sub)
            if entry is not None:
                if entry[0] > self._clock():
                    self._entries.move_to_end(sub)
                    return dict(entry[1])
                del self._entries[sub]
        # Query outside the lock: a slow database must not serialise every request.
        user = user_by_cognito_sub(self.db, sub)
        if user is None:
            return None
        if self.ttl > 0:
            with self._lock:
                self._entries[sub] = (self._clock() + self.ttl, user)
                self._entries.move_to_end(sub)
                while len(self._entries) > self.max_size:
                    self._entries.popitem(last=False)
        return dict(user)

    def invalidate(self, sub: str | None = None) -> None:
        """Forget one sub, or every entry."""
        with self._lock:
            if sub is None:
                self._entries.clear()
            else:
                self._entries.pop(sub, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
