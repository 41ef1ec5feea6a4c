"""Reads: A (a conversation's messages), B (my conversations) and membership.

Pages of A and B are eventually consistent reads (half the cost); B shows
what the asynchronous pattern E wrote anyway. Membership is read strongly
consistent, so a conversation created a moment ago is visible to its members.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from backend_flask.lib.cache import BoundedCache
from backend_flask.lib.ddb.calls import put_if_absent, query_items, translate_errors
from backend_flask.lib.ddb.cursors import decode_cursor, encode_cursor
from backend_flask.lib.ddb.keys import (
    DEFAULT_LIMIT,
    GROUP_INDEX,
    GROUP_PREFIX,
    MEMBER_PREFIX,
    MESSAGE_PREFIX,
    check_limit,
    from_item,
    group_out,
    is_uuid,
    key,
    membership_item,
    message_out,
    now_iso,
    to_item,
)

log = logging.getLogger(__name__)


class ReadsMixin:
    """Patterns A and B, membership, and a scan for tools."""

    client: Any
    name: str
    known_members: BoundedCache

    def list_messages(self, message_group_uuid: str, *, limit: int = DEFAULT_LIMIT, before: str | None = None) -> dict:
        """A: return one page of a conversation, oldest first, and the cursor of the older page."""
        page = self._page(MESSAGE_PREFIX + message_group_uuid, check_limit(limit), before)
        return {"items": [message_out(item) for item in reversed(page["items"])], "next": page["next"]}

    def list_message_groups(self, user_uuid: str, *, limit: int = DEFAULT_LIMIT, before: str | None = None) -> dict:
        """B: return one page of a user's conversations, newest activity first, and the next cursor."""
        page = self._page(GROUP_PREFIX + user_uuid, check_limit(limit), before)
        return {"items": [group_out(item) for item in page["items"]], "next": page["next"]}

    def _page(self, pk: str, limit: int, before: str | None) -> dict:
        """Query one partition newest first: up to `limit` items and the cursor of the rest."""
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": {"S": pk}}
        if before is not None:
            condition += " AND sk < :before"
            values[":before"] = {"S": decode_cursor(before, pk)}
        kwargs: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": condition,
                                  "ExpressionAttributeValues": values, "ScanIndexForward": False}
        # One item more than the page tells whether an older page exists, so `next` is None on the last page.
        items = query_items(self.client, kwargs, limit + 1)
        page = items[:limit]
        more = len(items) > limit
        return {"items": page, "next": encode_cursor(pk, page[-1]["sk"]) if more and page else None}

    def is_member(self, message_group_uuid: str, user_uuid: str) -> bool:
        """Tell whether the user takes part in the conversation (strongly consistent read)."""
        return self.membership(message_group_uuid, user_uuid) is not None

    def membership(self, message_group_uuid: str, user_uuid: str, *, fresh: bool = False) -> dict | None:
        """Return the user's membership item ({} or {"last_read_at"}) read strongly consistent, or None.

        A conversation written by the original bootcamp code has conversation
        rows but no membership items: when the item is missing, the index is
        asked whether the user owns a row of the group, and if so the
        membership items are written, so the next check is the cheap one.
        A membership found is remembered; `fresh` reads the stored marker anyway.
        """
        if not is_uuid(message_group_uuid) or not isinstance(user_uuid, str) or not 0 < len(user_uuid) <= 128:
            return None
        known = None if fresh else self.known_members.get((message_group_uuid, user_uuid))
        if known is not None:
            return dict(known)
        with translate_errors():
            response = self.client.get_item(TableName=self.name, Key=key(MEMBER_PREFIX + message_group_uuid,
                                                                         user_uuid),
                                            ConsistentRead=True, ProjectionExpression="pk, last_read_at")
        if "Item" in response:
            found = from_item(response["Item"])
            membership = {"last_read_at": found["last_read_at"]} if "last_read_at" in found else {}
        else:
            owners = self.row_owners(message_group_uuid)
            if user_uuid not in owners:
                return None  # non-members are never remembered: they may be added later
            self.backfill_membership(message_group_uuid, owners)
            membership = {}
        self.known_members.put((message_group_uuid, user_uuid), membership)
        return dict(membership)

    def row_owners(self, message_group_uuid: str) -> set[str]:
        """Return the users who own a conversation row of the group, as the index shows them."""
        return {row["pk"][len(GROUP_PREFIX):] for row in self.group_rows(message_group_uuid).values()}

    def group_rows(self, message_group_uuid: str) -> dict[str, dict]:
        """Return the GSI's view of a group's conversation rows: the newest one seen per owner."""
        kwargs: dict[str, Any] = {"TableName": self.name, "IndexName": GROUP_INDEX,
                                  "KeyConditionExpression": "message_group_uuid = :g",
                                  "ExpressionAttributeValues": {":g": {"S": message_group_uuid}}}
        rows: dict[str, dict] = {}
        with translate_errors():
            while True:
                response = self.client.query(**kwargs)
                for item in map(from_item, response.get("Items", [])):
                    # A lagging index may still show a row's old position next to its new one.
                    if item["pk"].startswith(GROUP_PREFIX) and item["sk"] > rows.get(item["pk"], {}).get("sk", ""):
                        rows[item["pk"]] = item
                if "LastEvaluatedKey" not in response:
                    return rows
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def backfill_membership(self, message_group_uuid: str, owners: set[str]) -> int:
        """Write the missing membership items of a group's row owners; return how many were written."""
        written = 0
        for owner in sorted(owners):
            item = to_item(membership_item(message_group_uuid, owner, now_iso()))
            if put_if_absent(self.client, self.name, item) is None:
                written += 1
        if written:
            log.info("conversation %s: wrote %d membership item(s) it lacked", message_group_uuid, written)
        return written

    def members(self, message_group_uuid: str) -> set[str]:
        """Return the group's members from their membership items (read strongly consistent)."""
        with translate_errors():
            response = self.client.query(TableName=self.name, KeyConditionExpression="pk = :pk",
                                         ExpressionAttributeValues={":pk": {"S": MEMBER_PREFIX + message_group_uuid}},
                                         ConsistentRead=True, ProjectionExpression="sk")
        return {item["sk"]["S"] for item in response.get("Items", [])}

    def scan(self, *, limit: int | None = None) -> Iterator[dict]:
        """Yield every item of the table as a plain dict, at most `limit` of them (tools, never the API).

        Each Scan call asks for no more than the items still wanted, so a small
        limit reads (and is billed for) that many items, not a whole page.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        kwargs: dict[str, Any] = {"TableName": self.name}
        seen = 0
        with translate_errors():
            while limit is None or seen < limit:
                if limit is not None:
                    kwargs["Limit"] = limit - seen
                response = self.client.scan(**kwargs)
                for item in response.get("Items", []):
                    yield from_item(item)
                    seen += 1
                if "LastEvaluatedKey" not in response:
                    return
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
