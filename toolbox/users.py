"""Users across Cognito and Postgres for the local stack and the bin/ scripts: create, sign up, link.

The API only looks users up (`backend_flask.lib.users`); everything that
creates users or links them to Cognito subs lives here.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.db import Db
from backend_flask.lib.ddb import MessagesTable
from toolbox import cognito, pg
from toolbox.pg import connect

log = logging.getLogger(__name__)


def all_users(url: str) -> list[dict]:
    """Return every user row (uuid, handle, email, display_name, cognito_user_id)."""
    with connect(url) as conn:
        return Db.on_connection(conn).query_array("users/all")


def seed_user_uuids() -> set[str]:
    """Return the uuids db/seed.sql gives the demo users (the users a re-created database will have)."""
    return set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", pg.SEED_FILE.read_text()))


def users_a_reset_would_orphan(url: str, table: MessagesTable) -> list[str]:
    """Return the handles of users with conversations in the table whose uuid a re-created database drops.

    Conversations name their members by uuid; only the seed's users come
    back, with the uuids seed.sql fixes. Nothing to check if the database
    does not exist.
    """
    if not pg.database_exists(url):
        return []
    keep = seed_user_uuids()
    return [user["handle"] for user in all_users(url)
            if user["uuid"] not in keep and table.list_message_groups(user["uuid"], limit=1)["items"]]


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


def create_users(config: Config, count: int, *, prefix: str, password: str) -> list[dict]:
    """Create `count` signed-up users (handles `<prefix><n>_<random>`) for benches; return them with tokens."""
    idp = make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url)
    made = []
    for n in range(count):
        handle = f"{prefix}{n}_{uuid.uuid4().hex[:6]}"
        made.append(create_signed_up_user(config.connection_url, idp, config.cognito_user_pool_id,
                                          config.cognito_client_id, handle=handle, display_name=f"{prefix} {n}",
                                          email=f"{handle}@example.test", password=password))
    return made


def token_for_handle(url: str, idp, client_id: str, handle: str, password: str) -> str:
    """Sign in as the user with this handle and return an access token."""
    with connect(url) as conn:
        email = Db.on_connection(conn).query_value("users/email_by_handle", handle=handle)
    if email is None:
        raise LookupError(f"no user with handle {handle!r}")
    return cognito.access_token(idp, client_id, email=email, password=password)
