"""Writes: C (start a conversation with its first message) and D (append), with idempotency keys.

A pair of users has exactly one conversation: its id is `pair_group_uuid()`
and C's transaction puts both membership items with `attribute_not_exists`,
so a second C for the same pair (even at the same moment) fails that
condition and appends to the conversation instead.

A message never overwrites another: its put is conditional on the key being
free, and a message in the same microsecond takes the next one. A failed
condition caused by this very message (a retried call whose first attempt
landed) is success, not a clash: the item in the way carries our message uuid.

A conversation row's position (`sk`) equals the time of its last message
unless another conversation of the same owner already sits at that exact
microsecond; then the row moves one microsecond later, and `last_message_at`
keeps the true time, which is what "only forward" compares.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from typing import Any

from backend_flask.lib.ddb.calls import (
    WRITE_ATTEMPTS,
    Cancelled,
    backoff,
    conditional,
    put_if_absent,
    transact,
    translate_errors,
)
from backend_flask.lib.ddb.keys import (
    IDEMPOTENCY_PREFIX,
    TTL_ATTRIBUTE,
    canonical,
    from_item,
    key,
    later,
    membership_item,
    message_item,
    now_iso,
    pair_group_uuid,
    person,
    row_item,
    to_item,
)
from backend_flask.lib.errors import Conflict, DynamoDBUnavailable, NotFound

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def _put(table: str, item: dict) -> dict:
    return {"Put": conditional({"TableName": table, "Item": to_item(item),
                                "ConditionExpression": "attribute_not_exists(pk)"})}


def idempotency_sort_key(client_key: str | None) -> str | None:
    """Return the sort key of an idempotency item (None when no key was given)."""
    if client_key is None or client_key == "":
        return None
    if not isinstance(client_key, str):
        raise ValueError("idempotency_key must be a string")
    if len(client_key.encode()) <= 256:
        return client_key
    return "sha256:" + hashlib.sha256(client_key.encode()).hexdigest()


def _fingerprint(group: str, message: str) -> str:
    """What an idempotency key promises: this text into this conversation (the same for C and D)."""
    return hashlib.sha256(f"{group}\n{message}".encode()).hexdigest()


class WritesMixin:
    """Patterns C and D."""

    client: Any
    name: str

    def create_message_group(self, *, sender: dict, receiver: dict, message: str,
                             idempotency_key: str | None = None) -> dict:
        """C: start the pair's conversation with a first message, or append if it already exists."""
        sender, receiver = person(sender), person(receiver)
        if canonical(sender["uuid"]) == canonical(receiver["uuid"]):
            raise ValueError("a conversation needs two different users")  # the service refuses it first
        idem = idempotency_sort_key(idempotency_key)
        group = pair_group_uuid(sender["uuid"], receiver["uuid"])
        message_uuid = str(uuid.uuid4())
        sk = now_iso()
        for attempt in range(WRITE_ATTEMPTS):
            result = {"message_group_uuid": group, "uuid": message_uuid, "display_name": sender["display_name"],
                      "handle": sender["handle"], "message": message, "created_at": sk}
            actions = {
                "sender_member": _put(self.name, membership_item(group, sender["uuid"], sk)),
                "receiver_member": _put(self.name, membership_item(group, receiver["uuid"], sk)),
                "sender_row": _put(self.name, row_item(owner=sender, other=receiver, group=group, sk=sk,
                                                       message=message, sender=sender)),
                "receiver_row": _put(self.name, row_item(owner=receiver, other=sender, group=group, sk=sk,
                                                         message=message, sender=sender)),
                "message": _put(self.name, message_item(group, sk, message_uuid, sender, message)),
            }
            if idem:
                actions["idempotency"] = self._idempotency_put(sender["uuid"], idem, result)
            cancelled = transact(self.client, actions)
            if cancelled is None:
                log.info("created conversation %s", group)
                return result
            if cancelled.failed("idempotency"):
                return self._first_result(sender["uuid"], idem, cancelled, group=group, message=message)
            if cancelled.failed("message") and self._ours(cancelled, group, sk, message_uuid):
                return result  # a retry of this very transaction: the first attempt landed
            if cancelled.failed("sender_member"):
                # The pair already talks (perhaps started by the other one a moment ago): append instead.
                appended = self.create_message(message_group_uuid=group, sender=sender, message=message,
                                               idempotency_key=idempotency_key)
                return {"message_group_uuid": group, **appended}
            if cancelled.failed("receiver_member"):
                # Only the receiver belongs to the pair's conversation: never let a non-member append.
                raise NotFound("message_group_not_found", detail=f"{sender['uuid']} is not a member of {group}")
            _retry_later(cancelled, attempt, "create_message_group", "sender_row", "receiver_row", "message")
            sk = later(sk)
        raise DynamoDBUnavailable(detail="create_message_group: too many conflicting writes")

    def create_message(self, *, message_group_uuid: str, sender: dict, message: str,
                       idempotency_key: str | None = None) -> dict:
        """D: append a message; never overwrite one with the same timestamp.

        The caller has checked membership (`is_member`: one strongly consistent
        GetItem); the message is then one PutItem conditional on its key being
        free (1 RCU + 1 WCU in all, where a transaction with a ConditionCheck
        would cost 4 WCU). Check-then-put is safe because a membership is never
        removed. With an idempotency key the message and the key's item go
        together in one transaction.
        """
        sender = person(sender)
        idem = idempotency_sort_key(idempotency_key)
        group = message_group_uuid
        message_uuid = str(uuid.uuid4())
        sk = now_iso()
        for attempt in range(WRITE_ATTEMPTS):
            result = {"uuid": message_uuid, "display_name": sender["display_name"], "handle": sender["handle"],
                      "message": message, "created_at": sk}
            item = message_item(group, sk, message_uuid, sender, message)
            if idem is None:
                found = put_if_absent(self.client, self.name, to_item(item))
                if found is None or found.get("message_uuid") == message_uuid:
                    return result  # written now, or by our own earlier attempt that botocore retried
                sk = later(sk)  # same microsecond as another message: take the next one, never overwrite
                continue
            cancelled = transact(self.client, {
                "message": _put(self.name, item),
                "idempotency": self._idempotency_put(sender["uuid"], idem, {"message_group_uuid": group, **result}),
            })
            if cancelled is None:
                return result
            if cancelled.failed("idempotency"):
                first = self._first_result(sender["uuid"], idem, cancelled, group=group, message=message)
                first.pop("message_group_uuid", None)
                return first
            _retry_later(cancelled, attempt, "create_message", "message")
            sk = later(sk)
        raise DynamoDBUnavailable(detail="create_message: too many conflicting writes")

    def _ours(self, cancelled: Cancelled, group: str, sk: str, message_uuid: str) -> bool:
        """Tell whether the message item in the way is this very message."""
        found = cancelled.item("message")
        if found is None:
            with translate_errors():
                response = self.client.get_item(TableName=self.name, Key=key(f"MSG#{group}", sk),
                                                ConsistentRead=True, ProjectionExpression="message_uuid")
            found = from_item(response.get("Item", {}))
        return found.get("message_uuid") == message_uuid

    def _idempotency_put(self, sender_uuid: str, idem: str, result: dict) -> dict:
        item = {"pk": IDEMPOTENCY_PREFIX + sender_uuid, "sk": idem, "result": result,
                "request": _fingerprint(result["message_group_uuid"], result["message"]),
                TTL_ATTRIBUTE: int(time.time()) + IDEMPOTENCY_TTL_SECONDS}
        return _put(self.name, item)

    def _first_result(self, sender_uuid: str, idem: str, cancelled: Cancelled, *, group: str, message: str) -> dict:
        """Return the result stored by the first call with this idempotency key.

        A key reused for another text or conversation raises Conflict: answering
        with the first result would silently drop the new message.
        """
        stored = cancelled.item("idempotency")
        if stored is None:
            with translate_errors():
                response = self.client.get_item(TableName=self.name, Key=key(IDEMPOTENCY_PREFIX + sender_uuid, idem),
                                                ConsistentRead=True)
            if "Item" not in response:
                raise Conflict("idempotency_key_expired", detail="idempotency item vanished")
            stored = from_item(response["Item"])
        if stored.get("request", _fingerprint(group, message)) != _fingerprint(group, message):
            raise Conflict("idempotency_key_reused", detail="idempotency key already used for another message")
        return _json_order(stored["result"])


def _retry_later(cancelled: Cancelled, attempt: int, what: str, *keyed: str) -> None:
    """Decide about a cancelled write: return to retry it a microsecond later, raise when that cannot help.

    A failed condition on one of the `keyed` actions means another item sits at
    that microsecond; a conflict or throttling is retried after a backoff.
    """
    if cancelled.failed(*keyed):
        return
    if cancelled.retryable:
        backoff(attempt)
        return
    raise cancelled.error(what)


# The order the API answers a message in; a replay must answer the same JSON, key order included.
_RESULT_ORDER = ("message_group_uuid", "uuid", "display_name", "handle", "message", "created_at")


def _json_order(result: dict) -> dict:
    """Return a stored result (a DynamoDB map has no order) in the API's key order."""
    ordered = {k: result[k] for k in _RESULT_ORDER if k in result}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    return ordered
