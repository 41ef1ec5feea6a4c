"""Read state: each member's read marker, and counting what they have not read.

A member's explicit read marker is `last_read_at` on their membership item
(`MBR#<group>` / user): a stable key, written only forward, read with the
membership check the API does anyway. A member's *effective* marker is the
later of that and their own newest message (sending marks a conversation
read up to the message sent).

Unread counts are never kept with `ADD 1` per stream record (redelivery and
reordering would break them): they are counted from the messages themselves,
between values that only move forward (see `stream`).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from backend_flask.lib.cache import BoundedCache
from backend_flask.lib.ddb.calls import error_code, translate_errors
from backend_flask.lib.ddb.keys import MEMBER_PREFIX, MESSAGE_PREFIX, from_item, key, plus_microsecond


class MarkersMixin:
    """Read markers and unread counts."""

    client: Any
    name: str
    known_members: BoundedCache

    def mark_read(self, message_group_uuid: str, user_uuid: str, created_at: str) -> str | None:
        """Move the member's read marker forward to `created_at`; return the marker now stored.

        Never moves it backwards; returns None if the user is not a member.
        One conditional UpdateItem (1 WCU); the caller avoids calling it when
        the marker is already there, since a failed condition is billed too.
        """
        marker = self._store_marker(message_group_uuid, user_uuid, created_at)
        if marker is not None:
            self.known_members.put((message_group_uuid, user_uuid), {"last_read_at": marker})
        return marker

    def _store_marker(self, message_group_uuid: str, user_uuid: str, created_at: str) -> str | None:
        with translate_errors():
            try:
                response = self.client.update_item(
                    TableName=self.name, Key=key(MEMBER_PREFIX + message_group_uuid, user_uuid),
                    UpdateExpression="SET last_read_at = :t",
                    ConditionExpression="attribute_exists(pk) AND "
                                        "(attribute_not_exists(last_read_at) OR last_read_at < :t)",
                    ExpressionAttributeValues={":t": {"S": created_at}},
                    ReturnValues="UPDATED_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                old = exc.response.get("Item")
                if old is None:
                    old = self.client.get_item(TableName=self.name, ConsistentRead=True,
                                               Key=key(MEMBER_PREFIX + message_group_uuid, user_uuid)).get("Item")
                return from_item(old).get("last_read_at") if old else None
        return response["Attributes"]["last_read_at"]["S"]

    def message_time(self, message_group_uuid: str, created_at: str) -> str | None:
        """Return `created_at` if a message of the conversation has exactly that time, else None."""
        with translate_errors():
            response = self.client.get_item(TableName=self.name, ConsistentRead=True,
                                            Key=key(MESSAGE_PREFIX + message_group_uuid, created_at),
                                            ProjectionExpression="sk")
        return created_at if "Item" in response else None

    def newest_message_time(self, message_group_uuid: str) -> str | None:
        """Return the time of the conversation's newest message (read strongly consistent), or None."""
        with translate_errors():
            response = self.client.query(TableName=self.name, KeyConditionExpression="pk = :pk",
                                         ExpressionAttributeValues={":pk": {"S": MESSAGE_PREFIX + message_group_uuid}},
                                         ScanIndexForward=False, Limit=1, ConsistentRead=True,
                                         ProjectionExpression="sk")
        items = response.get("Items", [])
        return items[0]["sk"]["S"] if items else None

    def count_unread(self, message_group_uuid: str, owner_uuid: str, *, after: str | None,
                     until: str | None = None) -> tuple[int, str | None]:
        """Count the other member's messages after the owner's effective marker, up to `until`.

        Reads the messages in (after, until] strongly consistent (only sk and
        sender). An own message in that range moves the effective marker to
        it: the count restarts there. Returns (count, the owner's newest own
        message time in the range, or None).
        """
        if after and until and after >= until:
            return 0, None
        values: dict[str, Any] = {":pk": {"S": MESSAGE_PREFIX + message_group_uuid}}
        if after and until:
            condition = "pk = :pk AND sk BETWEEN :lo AND :hi"
            values.update({":lo": {"S": plus_microsecond(after)}, ":hi": {"S": until}})
        elif after:
            condition = "pk = :pk AND sk > :lo"
            values[":lo"] = {"S": after}
        elif until:
            condition = "pk = :pk AND sk <= :hi"
            values[":hi"] = {"S": until}
        else:
            condition = "pk = :pk"
        kwargs: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": condition,
                                  "ExpressionAttributeValues": values, "ConsistentRead": True,
                                  "ProjectionExpression": "sk, user_uuid"}
        count, own = 0, None
        with translate_errors():
            while True:
                response = self.client.query(**kwargs)
                for item in response.get("Items", []):
                    if item.get("user_uuid", {}).get("S") == owner_uuid:
                        count, own = 0, item["sk"]["S"]
                    else:
                        count += 1
                if "LastEvaluatedKey" not in response:
                    return count, own
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
