"""Pattern E: when a message lands, move both conversation rows forward to it.

The stream handler finds the rows through the GSI, which may lag: the row it
sees may already have moved. Each move is therefore a Delete+Put transaction
conditional on the row still being where the index showed it and older than
the message, and a failed condition makes it read the index again. Redelivered,
reordered or racing records are harmless: rows only ever move forward.
"""

from __future__ import annotations

from typing import Any

from backend_flask.lib.ddb.calls import WRITE_ATTEMPTS, backoff, conditional, transact
from backend_flask.lib.ddb.keys import GROUP_PREFIX, is_timestamp, key, plus_microsecond, row_time, to_item
from backend_flask.lib.errors import DynamoDBUnavailable

# Re-queries of the GSI when pattern E finds its view stale (rows moved or not indexed yet).
MOVE_ATTEMPTS = 6


class StreamMixin:
    """Pattern E."""

    client: Any
    name: str

    def move_message_groups(self, message_group_uuid: str, sk: str, message: str) -> int:
        """E: move the conversation rows of a group forward to (sk, message); return how many moved.

        Raises DynamoDBUnavailable if the index stays stale, so the caller
        retries the record later.
        """
        if not is_timestamp(sk):
            raise ValueError(f"not a message timestamp: {sk!r}")
        moved = 0
        for attempt in range(MOVE_ATTEMPTS):
            rows = self.group_rows(message_group_uuid)
            settled = True
            for row in rows.values():
                if row_time(row) >= sk:
                    continue
                if self.move_row(message_group_uuid, row, sk, message):
                    moved += 1
                else:
                    settled = False
            if settled and (len(rows) >= 2 or not self._unindexed_members(message_group_uuid, rows)):
                return moved
            backoff(attempt + 2)
        raise DynamoDBUnavailable(
            detail=f"conversation rows of {message_group_uuid} kept moving or are not indexed yet")

    def _unindexed_members(self, group: str, rows: dict[str, dict]) -> set[str]:
        """Return the members whose conversation row the index does not show yet."""
        return {m for m in self.members(group) if GROUP_PREFIX + m not in rows}

    def move_row(self, group: str, row: dict, sk: str, message: str) -> bool:
        """Move one conversation row to (sk, message) in one transaction; False if it was not where we saw it."""
        old_sk = row["sk"]
        target = sk if sk > old_sk else plus_microsecond(old_sk)
        for _ in range(WRITE_ATTEMPTS):
            moved = {**row, "sk": target, "message": message, "last_message_at": sk}
            cancelled = transact(self.client, {
                "old": {"Delete": {
                    "TableName": self.name, "Key": key(row["pk"], old_sk),
                    "ConditionExpression": "message_group_uuid = :g AND (last_message_at < :t OR "
                                           "(attribute_not_exists(last_message_at) AND sk < :t))",
                    "ExpressionAttributeValues": {":g": {"S": group}, ":t": {"S": sk}}}},
                "new": {"Put": conditional({"TableName": self.name, "Item": to_item(moved),
                                            "ConditionExpression": "attribute_not_exists(pk)"})},
            })
            if cancelled is None:
                return True
            if cancelled.failed("old") or cancelled.retryable:
                return False  # moved by someone else, or not ours to move: look again
            if cancelled.failed("new"):
                target = plus_microsecond(target)  # another conversation of this owner sits there
                continue
            raise cancelled.error("move_message_groups")
        return False
