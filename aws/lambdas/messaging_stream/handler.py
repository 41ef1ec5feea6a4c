"""messaging-stream Lambda: keep both conversation rows on the latest message and read state (pattern E).

Lambda invokes `handler` with a DynamoDB Streams batch of the `cruddur-messages`
table. Every record is looked at; new message items (`MSG#`) and membership
items (`MBR#`) that carry a read marker do something: per conversation, the
newest message and the read positions are settled at once. Failures are
reported per record (`batchItemFailures`, the ReportBatchItemFailures
contract), so one bad record never hides the others' success. The work itself
is `MessagesTable.settle`: idempotent and only forward in time, so a batch
delivered twice, or out of order, is harmless.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client

log = logging.getLogger(__name__)
log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())

# One client per execution environment, reused by every invocation. Lambda sets
# AWS_REGION; AWS_ENDPOINT_URL is only ever set locally (DynamoDB Local).
TABLE = ddb.MessagesTable(make_client("dynamodb", region=os.environ.get("AWS_REGION") or "us-east-1",
                                      endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None),
                          os.environ.get("DDB_MESSAGE_TABLE") or ddb.TABLE_NAME)


class BatchProcessingError(Exception):
    """Every record of the batch failed: Lambda retries (and bisects) the whole batch."""


@dataclass
class GroupChange:
    """What a batch says about one conversation: its newest new message and who has read up to when."""

    newest: tuple[str, str] | None = None          # (created_at, text)
    reads: dict[str, str] = field(default_factory=dict)
    sequences: list[str] = field(default_factory=list)

    def read(self, user_uuid: str | None, at: str) -> None:
        """Note that the user has read up to `at` (only the latest position counts)."""
        if user_uuid and at > self.reads.get(user_uuid, ""):
            self.reads[user_uuid] = at


def note(record: dict, changes: dict[str, GroupChange]) -> None:
    """Add what one record says to the batch's changes per conversation (nothing if E ignores it)."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return
    data = record["dynamodb"]
    image = data["NewImage"]
    message = ddb.message_from_image(image) if record["eventName"] == "INSERT" else None
    if message is not None:
        if not isinstance(image.get("message", {}).get("S"), str):
            # Never blank a conversation's last message because of a broken item.
            raise ValueError("message item without a string 'message'")
        change = changes.setdefault(message["message_group_uuid"], GroupChange())
        if change.newest is None or message["sk"] > change.newest[0]:
            change.newest = (message["sk"], message["message"])
        change.read(message["sender"], message["sk"])   # sending marks read up to the message sent
        change.sequences.append(data["SequenceNumber"])
        return
    marker = ddb.read_marker_from_image(image)
    if marker is not None:
        change = changes.setdefault(marker["message_group_uuid"], GroupChange())
        change.read(marker["user_uuid"], marker["last_read_at"])
        change.sequences.append(data["SequenceNumber"])


def process_batch(event: dict, table: ddb.MessagesTable) -> dict:
    """Settle the conversation rows of every conversation a batch touches; return the records that failed."""
    records = event.get("Records") or []
    failed: list[str] = []
    changes: dict[str, GroupChange] = {}
    for record in records:
        try:
            note(record, changes)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            log.error("malformed record %s: %r", _sequence(record), exc)
            failed.append(_sequence(record))
    changed = 0
    for group, change in changes.items():
        try:
            changed += table.settle(group, newest=change.newest, reads=change.reads)
        except Exception:  # one group's failure must not hide the others' success
            log.exception("settling the conversation rows of group %s failed", group)
            failed.extend(change.sequences)
    log.info("batch: %d records, %d conversations, %d rows changed, %d failed",
             len(records), len(changes), changed, len(failed))
    if records and len(failed) == len(records):
        raise BatchProcessingError(f"all {len(records)} records failed")
    order = {sequence: n for n, sequence in enumerate(_sequence(r) for r in records)}
    return {"batchItemFailures": [{"itemIdentifier": s} for s in sorted(set(failed), key=order.get)]}


def _sequence(record: Any) -> str:
    try:
        return record["dynamodb"]["SequenceNumber"]
    except (KeyError, TypeError):
        return ""  # Lambda treats an empty identifier as a failure of the whole batch


def handler(event: dict, context: Any) -> dict:
    """Lambda entry point: pattern E for one DynamoDB Streams batch."""
    return process_batch(event, TABLE)
