"""Pattern E: when messages land or markers move, bring both conversation rows up to date.

A row holds what listing conversations shows: the last message (its position
`sk` is that message's time) and the owner's read state. The stream handler
calls `settle` once per conversation of a batch, with the newest new message
and the read positions the batch reveals (senders' own messages, explicit
markers). Every value it writes only moves forward, and unread counts are
counted from the stored messages, never incremented per record, so a batch
delivered twice, out of order, or racing another one leaves the same rows:

- `read_at` = max(seen, revealed); `peer_read_at` likewise; `counted_until` =
  max(seen, newest message).
- `unread`: when only newer messages arrived, the other's messages in
  (counted_until, newest] are counted and added; when the marker moved, or a
  record is not newer than what was counted (a redelivery, or a message that
  was committed late), the count is taken again from the marker.

The handler finds the rows through the GSI, which may lag: the row it sees may
already have changed. Each write is conditional on the row's version `v`
being the one seen (a move is a Delete+Put transaction, an update a
conditional Put), and a failed condition makes it read the index again.
"""

from __future__ import annotations

from typing import Any

from backend_flask.lib.ddb.calls import WRITE_ATTEMPTS, backoff, conditional, transact, translate_errors
from backend_flask.lib.ddb.keys import GROUP_PREFIX, is_timestamp, key, plus_microsecond, row_time, to_item
from backend_flask.lib.errors import DynamoDBUnavailable

# Re-queries of the GSI when pattern E finds its view stale (rows moved or not indexed yet).
MOVE_ATTEMPTS = 6
READ_STATE = ("read_at", "peer_read_at", "counted_until", "unread")


class StreamMixin:
    """Pattern E."""

    client: Any
    name: str

    def move_message_groups(self, message_group_uuid: str, sk: str, message: str) -> int:
        """E for one new message: settle the group's rows with it; return how many rows changed."""
        return self.settle(message_group_uuid, newest=(sk, message))

    def settle(self, message_group_uuid: str, *, newest: tuple[str, str] | None = None,
               reads: dict[str, str] | None = None) -> int:
        """E: bring the group's rows up to (newest message time, text) and the read positions `reads`.

        `reads` maps a member's uuid to a time they have read up to (their own
        new message, or their explicit marker). Returns how many rows changed.
        Raises DynamoDBUnavailable if the index stays stale, so the caller
        retries the record later.
        """
        if newest is not None and not is_timestamp(newest[0]):
            raise ValueError(f"not a message timestamp: {newest[0]!r}")
        reads = {user: at for user, at in (reads or {}).items() if is_timestamp(at)}
        changed = 0
        for attempt in range(MOVE_ATTEMPTS):
            rows = self.group_rows(message_group_uuid)
            settled = True
            for row in rows.values():
                new = self._next_row(message_group_uuid, row, newest, reads)
                if new is None:
                    continue
                if self._replace_row(message_group_uuid, row, new):
                    changed += 1
                else:
                    settled = False
            if settled and (len(rows) >= 2 or not self._unindexed_members(message_group_uuid, rows)):
                return changed
            backoff(attempt + 2)
        raise DynamoDBUnavailable(
            detail=f"conversation rows of {message_group_uuid} kept moving or are not indexed yet")

    def _unindexed_members(self, group: str, rows: dict[str, dict]) -> set[str]:
        """Return the members whose conversation row the index does not show yet."""
        return {m for m in self.members(group) if GROUP_PREFIX + m not in rows}

    def _next_row(self, group: str, row: dict, newest: tuple[str, str] | None,
                  reads: dict[str, str]) -> dict | None:
        """Return the row as it should be after this batch, or None when nothing changes."""
        owner, peer = row["pk"][len(GROUP_PREFIX):], row.get("user_uuid")
        last = row_time(row)
        seen_read = row.get("read_at")
        counted = row.get("counted_until") or last   # rows of the original format: counted up to their message
        unread = int(row.get("unread") or 0)
        read_at = max(filter(None, (seen_read, reads.get(owner))), default=None)
        peer_read_at = max(filter(None, (row.get("peer_read_at"), reads.get(peer))), default=None)
        until = max(counted, newest[0]) if newest else counted
        if read_at != seen_read or (newest and newest[0] <= counted):
            unread, own = self.count_unread(group, owner, after=read_at, until=until)
        elif newest:
            more, own = self.count_unread(group, owner, after=max(counted, read_at or ""), until=until)
            unread = more if own else unread + more   # an own message in between: the count restarts there
        else:
            own = None
        read_at = max(filter(None, (read_at, own)), default=None)
        new = {**row, "counted_until": until, "unread": unread, "v": int(row.get("v") or 0) + 1}
        for name, value in (("read_at", read_at), ("peer_read_at", peer_read_at)):
            if value:
                new[name] = value
        if newest and newest[0] > last:
            new.update(message=newest[1], last_message_at=newest[0])
        elif all(new.get(k) == row.get(k) for k in READ_STATE):
            return None
        return new

    def _replace_row(self, group: str, row: dict, new: dict) -> bool:
        """Write `new` over `row` if the row is still the version seen; move it if its message is newer."""
        version = _version_condition(row)
        if new["last_message_at"] == row.get("last_message_at") and new.get("message") == row.get("message"):
            condition = {"ConditionExpression": f"attribute_exists(pk) AND {version[0]}"}
            if version[1]:
                condition["ExpressionAttributeValues"] = version[1]
            with translate_errors():
                try:
                    self.client.put_item(TableName=self.name, Item=to_item(new), **condition)
                except self.client.exceptions.ConditionalCheckFailedException:
                    return False
            return True
        return self.move_row(group, row, new, version)

    def move_row(self, group: str, row: dict, new: dict, version: tuple[str, dict] | None = None) -> bool:
        """Move one row to its new message's time in one transaction; False if it was not as we saw it."""
        version = version or _version_condition(row)
        sk = new["last_message_at"]
        old_sk = row["sk"]
        target = sk if sk > old_sk else plus_microsecond(old_sk)
        for _ in range(WRITE_ATTEMPTS):
            cancelled = transact(self.client, {
                "old": {"Delete": {
                    "TableName": self.name, "Key": key(row["pk"], old_sk),
                    "ConditionExpression": f"message_group_uuid = :g AND {version[0]} AND "
                                           "(last_message_at < :t OR (attribute_not_exists(last_message_at) "
                                           "AND sk < :t))",
                    "ExpressionAttributeValues": {":g": {"S": group}, ":t": {"S": sk}, **version[1]}}},
                "new": {"Put": conditional({"TableName": self.name, "Item": to_item({**new, "sk": target}),
                                            "ConditionExpression": "attribute_not_exists(pk)"})},
            })
            if cancelled is None:
                return True
            if cancelled.failed("old") or cancelled.retryable:
                return False  # changed by someone else, or not ours to move: look again
            if cancelled.failed("new"):
                target = plus_microsecond(target)  # another conversation of this owner sits there
                continue
            raise cancelled.error("move_message_groups")
        return False


def _version_condition(row: dict) -> tuple[str, dict]:
    """The condition that a row is still the version the handler saw, and its values."""
    if "v" in row:
        return "v = :v", {":v": {"N": str(row["v"])}}
    return "attribute_not_exists(v)", {}
