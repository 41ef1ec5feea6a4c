"""How the table's methods call DynamoDB: error translation, conditional writes, named transactions.

A conditional write that fails comes back with the item that made it fail
(`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so a caller can tell its own
earlier attempt (a retry whose first try landed) from someone else's item.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from backend_flask.lib import budget
from backend_flask.lib.ddb.keys import from_item
from backend_flask.lib.errors import DynamoDBUnavailable, TableMissing

log = logging.getLogger(__name__)

# Attempts for writes cancelled by a conflict or throttling, or by a sort-key collision.
WRITE_ATTEMPTS = 8

CONDITION_FAILED = "ConditionalCheckFailed"
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                      "RequestLimitExceeded"}
_BUSY = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
         "InternalServerError", "ServiceUnavailable"}
# The task's role or credentials do not let it use the table: an operator's problem, a 503 for clients.
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "MissingAuthenticationTokenException"}


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn a DynamoDB that cannot be reached, is busy, or lacks the table into DynamoDBUnavailable."""
    try:
        yield
    except BotoConnectionError as exc:
        raise DynamoDBUnavailable(detail=f"DynamoDB unreachable: {exc}") from exc
    except ClientError as exc:
        code = error_code(exc)
        if code == "ResourceNotFoundException":
            raise TableMissing(detail=f"table missing: {exc}") from exc
        if code in _BUSY:
            raise DynamoDBUnavailable(detail=f"DynamoDB busy: {code}") from exc
        if code in _DENIED:
            log.error("DynamoDB refused our credentials: %s", exc)
            raise DynamoDBUnavailable(detail=f"DynamoDB access denied: {code}") from exc
        raise
    except BotoCoreError as exc:
        raise DynamoDBUnavailable(detail=f"DynamoDB failed: {exc}") from exc


def error_code(exc: ClientError) -> str:
    """Return the error code of a DynamoDB answer."""
    return exc.response.get("Error", {}).get("Code", "")


def backoff(attempt: int) -> None:
    """Sleep a random, growing while (full jitter), at most a second, and never past the request's budget."""
    time.sleep(max(0.0, budget.bound(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))))


def conditional(action: dict[str, Any]) -> dict[str, Any]:
    """Return a Put/Delete action that reports the item in the way when its condition fails."""
    return {**action, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def put_if_absent(client, table: str, item: dict[str, Any]) -> dict | None:
    """Put an item whose key must be free; return None on success, else the plain item in the way.

    The item in the way may be this very item: a retry (botocore's, after a
    slow answer) of a put that had landed.
    """
    with translate_errors():
        try:
            client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)",
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            found = exc.response.get("Item")
            if found is None:
                found = client.get_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]},
                                        ConsistentRead=True).get("Item") or {}
            return from_item(found)
    return None


def query_items(client, kwargs: dict[str, Any], count: int) -> list[dict]:
    """Run a Query (`kwargs`, changed in place) page after page until `count` plain items or the end."""
    items: list[dict] = []
    with translate_errors():
        while len(items) < count:
            kwargs["Limit"] = count - len(items)
            response = client.query(**kwargs)
            items.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    return items


class Cancelled:
    """Why a transaction was cancelled: the reason of each action, read by the action's name."""

    def __init__(self, names: list[str], reasons: list[dict]):
        if len(reasons) != len(names):
            reasons = [{"Code": "Unknown"}] * len(names)
        self.reasons = dict(zip(names, reasons, strict=True))

    def failed(self, *names: str) -> bool:
        """Tell whether the condition of any of these actions failed."""
        return any(self.reasons[n].get("Code") == CONDITION_FAILED for n in names if n in self.reasons)

    def item(self, name: str) -> dict | None:
        """Return the plain item that failed the action's condition, when DynamoDB returned it."""
        found = self.reasons.get(name, {}).get("Item")
        return from_item(found) if found else None

    @property
    def retryable(self) -> bool:
        """True when a conflict or throttling, not a condition, cancelled it."""
        return any(r.get("Code") in _RETRYABLE_REASONS for r in self.reasons.values())

    def error(self, what: str) -> DynamoDBUnavailable:
        """Return the error for a cancellation nobody expected."""
        codes = {n: r.get("Code") for n, r in self.reasons.items()}
        log.warning("%s cancelled: %s", what, codes)
        return DynamoDBUnavailable(detail=f"{what} cancelled: {codes}")


def transact(client, actions: dict[str, dict]) -> Cancelled | None:
    """Run TransactWriteItems over named actions; return None on success, else why it was cancelled."""
    names = list(actions)
    with translate_errors():
        try:
            client.transact_write_items(TransactItems=list(actions.values()))
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            return Cancelled(names, exc.response.get("CancellationReasons") or [])
    return None
