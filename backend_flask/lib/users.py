"""Users across Cognito and Postgres: the sub -> user lookups the API makes, and their setup.

The API calls user_by_cognito_sub (through UserCache), user_short and
create_message_users with the app's Db; the bin/ scripts and bin/dev call the
URL-based functions below them. Every uuid returned is a str.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from backend_flask.lib import cognito
from backend_flask.lib.db import Db, connect

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


def create_message_users(db: Db, sub: str, handle: str) -> dict:
    """Return {"sender": user | None, "receiver": user | None} for a new message, in one query."""
    row = db.query_object("users/create_message_users",
                          cognito_user_id=sub if _usable(sub) else None,
                          handle=handle if _usable(handle) else None)
    return {"sender": row["sender"], "receiver": row["receiver"]}


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


# ------------------------------------------------------------------ setup (scripts, bin/dev)

def all_users(url: str) -> list[dict]:
    """Return every user row (uuid, handle, email, display_name, cognito_user_id)."""
    with connect(url) as conn:
        return Db.on_connection(conn).query_array("users/all")


def sign_up_all(url: str, idp, pool_id: str, client_id: str, password: str) -> int:
    """Create (or find) a Cognito user for every Postgres user; return how many there are."""
    users = all_users(url)
    for user in users:
        cognito.sign_up(idp, pool_id, client_id, email=user["email"], password=password,
                        handle=user["handle"], display_name=user["display_name"])
    return len(users)


def pool_users_by_handle(idp, pool_id: str) -> dict[str, str]:
    """Return the pool's users as {preferred_username: sub}; users without a handle are left out."""
    return {u["handle"]: u["sub"] for u in cognito.list_users(idp, pool_id) if u["handle"] and u["sub"]}


def plan_cognito_user_ids(rows: Iterable[dict[str, Any]], pool_users: Iterable[dict[str, Any]]) -> dict[str, list]:
    """Work out which users.cognito_user_id values must change to match the pool.

    rows: {handle, cognito_user_id} from Postgres; pool_users: {handle, sub}
    from Cognito, matched by handle whatever its case. A row whose sub now
    belongs to another row's Cognito user is unlinked (new value None).
    Returns {"changed": [(handle, old, new)], "unmatched_db": [handles],
    "unmatched_pool": [handles], "ambiguous": [handles used by several pool users]}.
    """
    by_handle: dict[str, tuple[str, str]] = {}
    ambiguous: set[str] = set()
    for user in pool_users:
        if not user.get("handle") or not user.get("sub"):
            continue
        key = user["handle"].lower()
        if key in by_handle and by_handle[key][1] != user["sub"]:
            ambiguous.add(key)
        by_handle[key] = (user["handle"], user["sub"])
    rows = list(rows)
    wanted: dict[str, str | None] = {}
    unmatched_db = []
    for row in rows:
        key = row["handle"].lower()
        if key in by_handle and key not in ambiguous:
            wanted[row["handle"]] = by_handle.pop(key)[1]
        else:
            unmatched_db.append(row["handle"])
    claimed = set(wanted.values())
    changed = []
    for row in rows:
        old = row["cognito_user_id"]
        new = wanted.get(row["handle"], None if old in claimed else old)
        if new != old:
            changed.append((row["handle"], old, new))
    unmatched_pool = sorted(handle for key, (handle, _sub) in by_handle.items() if key not in ambiguous)
    return {"changed": changed, "unmatched_db": unmatched_db, "unmatched_pool": unmatched_pool,
            "ambiguous": sorted(ambiguous)}


def update_cognito_user_ids(url: str, idp, pool_id: str) -> dict[str, list]:
    """Set users.cognito_user_id from the pool, matching preferred_username to handle.

    All changes commit together or not at all. Returns plan_cognito_user_ids'
    report so a script can show what happened.
    """
    pool_users = cognito.list_users(idp, pool_id)
    with connect(url) as conn, conn.transaction():
        db = Db.on_connection(conn)
        plan = plan_cognito_user_ids(db.query_array("users/all"), pool_users)
        # Unlink first, then link: cognito_user_id is unique, and two rows may swap subs.
        for handle, _old, _new in plan["changed"]:
            db.query_commit("users/set_cognito_user_id", handle=handle, cognito_user_id=None)
        for handle, _old, new in plan["changed"]:
            if new is not None:
                db.query_commit("users/set_cognito_user_id", handle=handle, cognito_user_id=new)
    for handle, old, new in plan["changed"]:
        log.info("user %s: cognito_user_id %s -> %s", handle, old, new)
    return plan


def create_signed_up_user(url: str, idp, pool_id: str, client_id: str, *, handle: str, display_name: str,
                          email: str, password: str) -> dict:
    """Create a user in the pool and in Postgres, linked by sub; return it with an access token.

    Returns {uuid, handle, display_name, email, sub, token}.
    """
    sub = cognito.sign_up(idp, pool_id, client_id, email=email, password=password, handle=handle,
                          display_name=display_name)
    with connect(url) as conn:
        user_uuid = Db.on_connection(conn).query_value("users/create", display_name=display_name, handle=handle,
                                                       email=email, cognito_user_id=sub)
    token = cognito.access_token(idp, client_id, email=email, password=password)
    return {"uuid": user_uuid, "handle": handle, "display_name": display_name, "email": email, "sub": sub,
            "token": token}


def token_for_handle(url: str, idp, client_id: str, handle: str, password: str) -> str:
    """Sign in as the user with this handle and return an access token."""
    with connect(url) as conn:
        email = Db.on_connection(conn).query_value("users/email_by_handle", handle=handle)
    if email is None:
        raise LookupError(f"no user with handle {handle!r}")
    return cognito.access_token(idp, client_id, email=email, password=password)
