"""messaging-stream Lambda: when a message lands, move both conversation rows to it (pattern E).

Lambda invokes `handler` with a DynamoDB Streams batch of the `cruddur-messages`
table. Every record is looked at; only INSERTs of message items (`MSG#`) do
anything. Failures are reported per record (`batchItemFailures`, the
ReportBatchItemFailures contract), so one bad record never hides the others'
success. The move itself is `MessagesTable.move_message_groups`: idempotent and only
forward in time, so a batch delivered twice, or out of order, is harmless.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NewMessage:
    """What pattern E needs from a stream record."""

    message_group_uuid: str
    sk: str
    message: str
    sequence: str


def new_message(record: dict) -> NewMessage | None:
    """Return the message a record announces, or None if pattern E ignores the record."""
    if record.get("eventName") != "INSERT":
        return None
    data = record["dynamodb"]
    image = data["NewImage"]
    found = ddb.message_from_image(image)
    if found is None:
        return None
    text = image.get("message", {}).get("S")
    if not isinstance(text, str):
        # Never blank a conversation's last message because of a broken item.
        raise ValueError("message item without a string 'message'")
    return NewMessage(found["message_group_uuid"], found["sk"], text, data["SequenceNumber"])


def process_batch(event: dict, table: ddb.MessagesTable) -> dict:
    """Move conversation rows for every new message of a batch; return the records that failed."""
    records = event.get("Records") or []
    failed: list[str] = []
    newest: dict[str, NewMessage] = {}
    sequences: dict[str, list[str]] = {}
    for record in records:
        try:
            message = new_message(record)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            log.error("malformed record %s: %r", _sequence(record), exc)
            failed.append(_sequence(record))
            continue
        if message is None:
            continue
        group = message.message_group_uuid
        sequences.setdefault(group, []).append(message.sequence)
        # Several messages of one group in a batch: only the newest moves the rows.
        if group not in newest or message.sk > newest[group].sk:
            newest[group] = message
    moved = 0
    for group, message in newest.items():
        try:
            moved += table.move_message_groups(group, message.sk, message.message)
        except Exception:  # one group's failure must not hide the others' success
            log.exception("moving the conversation rows of group %s to %s failed", group, message.sk)
            failed.extend(sequences[group])
    log.info("batch: %d records, %d new messages in %d groups, %d rows moved, %d failed",
             len(records), sum(map(len, sequences.values())), len(newest), moved, len(failed))
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
