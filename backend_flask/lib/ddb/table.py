"""MessagesTable: the messages table and its access patterns, over one boto3 DynamoDB client."""

from __future__ import annotations

from typing import Any

from backend_flask.lib.cache import BoundedCache
from backend_flask.lib.ddb.keys import TABLE_NAME
from backend_flask.lib.ddb.markers import MarkersMixin
from backend_flask.lib.ddb.reads import ReadsMixin
from backend_flask.lib.ddb.replay import ReplayMixin
from backend_flask.lib.ddb.schema import SchemaMixin
from backend_flask.lib.ddb.stream import StreamMixin
from backend_flask.lib.ddb.tickets import TicketsMixin
from backend_flask.lib.ddb.writes import WritesMixin


class MessagesTable(SchemaMixin, ReadsMixin, WritesMixin, MarkersMixin, StreamMixin, ReplayMixin,
                    TicketsMixin):
    """One DynamoDB table in single-table design; each access pattern is a method.

    Build one per process and share it: the boto3 client is thread-safe.
    Capacity is metered outside, through the client's event hooks.

    Memberships found are remembered (a membership is never removed), so a
    member's repeated reads and sends skip the membership GetItem; the read
    marker kept with them can only lag the stored one, never lead it.
    """

    def __init__(self, client: Any, name: str = TABLE_NAME, *, membership_cache_size: int = 10_000):
        self.client = client
        self.name = name
        self.known_members = BoundedCache(max_size=membership_cache_size)

    def __repr__(self) -> str:
        return f"MessagesTable({self.name!r})"
