"""Users across Cognito and Postgres: demo sign-ups and the sub -> row mapping."""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import dict_row

from backend_flask.lib import cognito
from backend_flask.lib.db import connect_kwargs

log = logging.getLogger(__name__)


def all_users(url: str) -> list[dict]:
    """Return every user row (handle, email, display_name, cognito_user_id)."""
    with psycopg.connect(url, **connect_kwargs(5)) as conn:
        return conn.execute(
            "SELECT uuid, handle, email, display_name, cognito_user_id FROM public.users ORDER BY handle"
        ).fetchall()


def sign_up_all(url: str, idp, pool_id: str, client_id: str, password: str) -> int:
    """Create (or find) a Cognito user for every Postgres user; return how many there are."""
    users = all_users(url)
    for user in users:
        cognito.sign_up(idp, pool_id, client_id, email=user["email"], password=password,
                        handle=user["handle"], display_name=user["display_name"])
    return len(users)


def update_cognito_user_ids(url: str, idp, pool_id: str) -> dict[str, list]:
    """Set users.cognito_user_id from the pool, matching preferred_username to handle.

    Returns {"changed": [(handle, old, new)], "unmatched_db": [handles],
    "unmatched_pool": [handles]} so a script can show what happened.
    """
    pool_users = {u["handle"].lower(): u["sub"] for u in cognito.list_users(idp, pool_id) if u["handle"]}
    changed, unmatched_db = [], []
    with psycopg.connect(url, row_factory=dict_row, connect_timeout=5) as conn:
        for row in conn.execute("SELECT handle, cognito_user_id FROM public.users ORDER BY handle").fetchall():
            sub = pool_users.pop(row["handle"].lower(), None)
            if sub is None:
                unmatched_db.append(row["handle"])
            elif sub != row["cognito_user_id"]:
                conn.execute(
                    "UPDATE public.users SET cognito_user_id = %(sub)s WHERE lower(handle) = lower(%(handle)s)",
                    {"sub": sub, "handle": row["handle"]},
                )
                changed.append((row["handle"], row["cognito_user_id"], sub))
    return {"changed": changed, "unmatched_db": unmatched_db, "unmatched_pool": sorted(pool_users)}


def token_for_handle(url: str, idp, client_id: str, handle: str, password: str) -> str:
    """Sign in as the user with this handle and return an access token."""
    with psycopg.connect(url, row_factory=dict_row, connect_timeout=5) as conn:
        row = conn.execute("SELECT email FROM public.users WHERE lower(handle) = lower(%(h)s)",
                           {"h": handle}).fetchone()
    if row is None:
        raise LookupError(f"no user with handle {handle!r}")
    return cognito.access_token(idp, client_id, email=row["email"], password=password)
