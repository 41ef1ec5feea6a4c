"""Pattern B: the conversations of a user."""

from __future__ import annotations

from typing import Any

from backend_flask.lib import ddb


def list_message_groups(ddb_client: Any, table: str, user_uuid: str, *, limit: int,
                        before: str | None = None) -> dict:
    """Return one page of my conversations, newest activity first: {"items", "next"}."""
    return ddb.list_message_groups(ddb_client, table, user_uuid, limit=limit, before=before)
