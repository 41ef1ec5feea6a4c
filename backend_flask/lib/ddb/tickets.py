"""One-time tickets that open an event stream (a browser's EventSource cannot send a token).

A ticket is a random secret; the table keeps only its SHA-256, so a scan or a
backup reveals nothing usable. The item (`TKT#<sha256>` / `TICKET`) holds the
user it was issued to, until when it may be redeemed, and when the token it
was issued with expires (the stream ends then). Redeeming is one conditional
DeleteItem: of two redemptions of the same ticket, on any number of API
processes, exactly one succeeds. Unredeemed tickets expire through TTL.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from backend_flask.lib.ddb.calls import error_code, translate_errors
from backend_flask.lib.ddb.keys import TICKET_PREFIX, TTL_ATTRIBUTE, from_item, key, person, to_item

log = logging.getLogger(__name__)

TICKET_SORT_KEY = "TICKET"
TICKET_SECONDS = 30.0
MAX_TICKET_LENGTH = 128


def ticket_key(ticket: str) -> dict[str, Any]:
    """Return the key of a ticket's item (the ticket itself is never stored)."""
    return key(TICKET_PREFIX + hashlib.sha256(ticket.encode()).hexdigest(), TICKET_SORT_KEY)


class TicketsMixin:
    """Issue and redeem stream tickets."""

    client: Any
    name: str

    def issue_ticket(self, user: dict, *, token_expires_at: int, valid_seconds: float = TICKET_SECONDS) -> dict:
        """Store a new ticket for the user; return {"ticket", "expires_at"} (UTC ISO-8601)."""
        user = person(user)
        ticket = secrets.token_urlsafe(32)
        valid_until = time.time() + valid_seconds
        item = {**ticket_key(ticket), **to_item({
            "user_uuid": user["uuid"], "user_handle": user["handle"], "user_display_name": user["display_name"],
            "token_expires_at": int(token_expires_at), "valid_until": int(valid_until * 1000),
            TTL_ATTRIBUTE: int(valid_until) + 1})}
        with translate_errors():
            self.client.put_item(TableName=self.name, Item=item)
        expires_at = datetime.fromtimestamp(valid_until, timezone.utc).isoformat(timespec="milliseconds")
        return {"ticket": ticket, "expires_at": expires_at}

    def redeem_ticket(self, ticket: str) -> dict | None:
        """Use a ticket up: return {"user": {uuid, handle, display_name}, "token_expires_at"}, or None.

        None for a ticket that is unknown, already redeemed or expired.
        """
        if not isinstance(ticket, str) or not 0 < len(ticket) <= MAX_TICKET_LENGTH:
            return None
        with translate_errors():
            try:
                response = self.client.delete_item(
                    TableName=self.name, Key=ticket_key(ticket),
                    ConditionExpression="attribute_exists(pk) AND valid_until > :now",
                    ExpressionAttributeValues={":now": {"N": str(int(time.time() * 1000))}},
                    ReturnValues="ALL_OLD")
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return None  # unknown, used, or past valid_until (TTL deletes it later)
        item = from_item(response["Attributes"])
        return {"user": {"uuid": item["user_uuid"], "handle": item["user_handle"],
                         "display_name": item["user_display_name"]},
                "token_expires_at": int(item["token_expires_at"])}
