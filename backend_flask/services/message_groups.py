"""Pattern B: the conversations of a user."""

from __future__ import annotations

from backend_flask.lib.ddb import MessagesTable


def list_message_groups(table: MessagesTable, user: dict, *, limit: int, before: str | None = None) -> dict:
    """Return one page of the user's conversations, newest activity first: {"items", "next"}."""
    return table.list_message_groups(user["uuid"], limit=limit, before=before)
