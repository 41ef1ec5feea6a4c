"""Bring a table written by the original bootcamp code up to this backend's model, in place.

The original code wrote conversation rows (`GRP#<owner>`) and messages and
nothing else. This backend also needs one membership item per participant
(`MBR#<group>` / user uuid): the API reads it, strongly consistent, before
every read of or write into a conversation, and keeps the read marker on it.
The API backfills a conversation's memberships itself the first time one of
its members calls (through the index); `migrate` does the whole table ahead,
so no request pays for that.

It is safe on a live table: it only adds items, each with a conditional put
(`attribute_not_exists`), so it never replaces a membership the API wrote in
the meantime (and its read marker). It is idempotent: memberships already
there are read (BatchGetItem, cheaper than a failed conditional put) and left
alone. It scans page by page and reports each page with the position to
resume from, so a caller can save that position and continue later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.ddb.calls import put_if_absent, translate_errors
from backend_flask.lib.ddb.keys import GROUP_PREFIX, MEMBER_PREFIX, is_uuid, key, membership_item, now_iso, to_item
from backend_flask.lib.errors import DynamoDBUnavailable

log = logging.getLogger(__name__)

BATCH_GET_LIMIT = 100        # BatchGetItem's maximum keys per call
BATCH_GET_ATTEMPTS = 8


@dataclass
class Progress:
    """Where a migration stands: counts so far, and the scan position to resume from (None: done)."""

    pages: int = 0
    scanned: int = 0           # items the scan read
    rows: int = 0              # conversation rows among them
    written: int = 0           # membership items written
    present: int = 0           # membership items that were already there
    skipped: int = 0           # rows whose message_group_uuid is not a uuid (left alone)
    position: dict[str, Any] | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        """The counters, for saving and showing."""
        return {k: getattr(self, k) for k in ("pages", "scanned", "rows", "written", "present", "skipped")}


def migrate(table: MessagesTable, *, start: dict[str, Any] | None = None, page_size: int = 500,
            dry_run: bool = False, progress: Progress | None = None) -> Iterator[Progress]:
    """Scan the table from `start` and write the missing membership items; yield the progress after each page.

    With `dry_run` nothing is written (`written` counts what would be).
    `progress` carries the counts of an earlier, resumed run.
    """
    if not 1 <= page_size <= 10_000:
        raise ValueError("page_size must be 1..10000")
    done = progress or Progress()
    kwargs: dict[str, Any] = {
        "TableName": table.name, "Limit": page_size,
        "FilterExpression": "begins_with(pk, :rows) AND attribute_exists(message_group_uuid)",
        "ExpressionAttributeValues": {":rows": {"S": GROUP_PREFIX}},
        "ProjectionExpression": "pk, message_group_uuid",
    }
    if start:
        kwargs["ExclusiveStartKey"] = start
    while True:
        with translate_errors():
            response = table.client.scan(**kwargs)
        done.pages += 1
        done.scanned += response.get("ScannedCount", 0)
        wanted: set[tuple[str, str]] = set()
        for item in response.get("Items", []):
            done.rows += 1
            group = item["message_group_uuid"].get("S", "")
            if not is_uuid(group):
                done.skipped += 1
                continue
            wanted.add((group, item["pk"]["S"][len(GROUP_PREFIX):]))
        missing = _missing_memberships(table, wanted)
        done.present += len(wanted) - len(missing)
        for group, member in sorted(missing):
            if dry_run or put_if_absent(table.client, table.name, to_item(membership_item(group, member,
                                                                                          now_iso()))) is None:
                done.written += 1
            else:
                done.present += 1   # written by the API since we looked
        done.position = response.get("LastEvaluatedKey")
        yield done
        if done.position is None:
            return
        kwargs["ExclusiveStartKey"] = done.position


def _missing_memberships(table: MessagesTable, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the (group, member) pairs whose membership item does not exist."""
    missing = set(wanted)
    pairs = sorted(wanted)
    for at in range(0, len(pairs), BATCH_GET_LIMIT):
        request = {table.name: {"Keys": [key(MEMBER_PREFIX + g, m) for g, m in pairs[at:at + BATCH_GET_LIMIT]],
                                "ProjectionExpression": "pk, sk"}}
        for attempt in range(BATCH_GET_ATTEMPTS):
            with translate_errors():
                response = table.client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table.name, []):
                missing.discard((item["pk"]["S"][len(MEMBER_PREFIX):], item["sk"]["S"]))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(2.0, 0.05 * 2 ** attempt))
        else:
            raise DynamoDBUnavailable(detail="BatchGetItem kept leaving keys unprocessed")
    return missing
