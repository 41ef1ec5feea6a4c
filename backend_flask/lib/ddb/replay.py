"""Reads that replay what an event stream missed: what changed in a user's conversations since a time.

Bounded queries on the base table: the user's conversation rows whose
position is after the time (pattern B's partition, oldest change first), and
a conversation's messages after the time (pattern A's partition, strongly
consistent, so a message written a moment ago is there). Each returns at most
`limit` items and says whether there were more, so the caller can give up
(and tell the client to reload) rather than read without end.
"""

from __future__ import annotations

from typing import Any

from backend_flask.lib.ddb.calls import query_items
from backend_flask.lib.ddb.keys import GROUP_PREFIX, MESSAGE_PREFIX, check_limit


class ReplayMixin:
    """Changes since a time, for the event stream's replay."""

    client: Any
    name: str

    def rows_since(self, user_uuid: str, since: str, *, limit: int) -> tuple[list[dict], bool]:
        """Return the user's conversation rows placed after `since`, oldest first, and whether there are more."""
        return self._after(GROUP_PREFIX + user_uuid, since, limit, consistent=False)

    def messages_since(self, message_group_uuid: str, since: str, *, limit: int) -> tuple[list[dict], bool]:
        """Return a conversation's message items after `since`, oldest first, and whether there are more."""
        return self._after(MESSAGE_PREFIX + message_group_uuid, since, limit, consistent=True)

    def _after(self, pk: str, since: str, limit: int, *, consistent: bool) -> tuple[list[dict], bool]:
        limit = check_limit(limit)
        kwargs: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": "pk = :pk AND sk > :since",
                                  "ExpressionAttributeValues": {":pk": {"S": pk}, ":since": {"S": since}},
                                  "ScanIndexForward": True, "ConsistentRead": consistent}
        items = query_items(self.client, kwargs, limit + 1)  # one more tells whether there is more
        return items[:limit], len(items) > limit
