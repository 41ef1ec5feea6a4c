"""MessagesTable: the messages table and its access patterns, over one boto3 DynamoDB client."""

from __future__ import annotations

from typing import Any

from backend_flask.lib.ddb.keys import TABLE_NAME
from backend_flask.lib.ddb.reads import ReadsMixin
from backend_flask.lib.ddb.replay import ReplayMixin
from backend_flask.lib.ddb.schema import SchemaMixin
from backend_flask.lib.ddb.stream import StreamMixin
from backend_flask.lib.ddb.tickets import TicketsMixin
from backend_flask.lib.ddb.writes import WritesMixin


class MessagesTable(SchemaMixin, ReadsMixin, WritesMixin, StreamMixin, ReplayMixin, TicketsMixin):
    """One DynamoDB table in single-table design; each access pattern is a method.

    Build one per process and share it: the boto3 client is thread-safe.
    Capacity is metered outside, through the client's event hooks.
    """

    def __init__(self, client: Any, name: str = TABLE_NAME):
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"MessagesTable({self.name!r})"
