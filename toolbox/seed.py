"""Seed data for the messages table: the demo conversation, and large conversations for benchmarks.

The demo conversation goes through patterns C and D like any other, so it has
membership items and conversation rows; a large data set is written with
BatchWriteItem (no conditions, 25 items a call), always older than the
conversation's start so it never lands on a real message, and with fixed keys
so a rerun completes an interrupted load instead of adding to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any

import psycopg
from psycopg.rows import dict_row

from backend_flask.config import Config
from backend_flask.lib import ddb
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.ddb.calls import translate_errors
from backend_flask.lib.ddb.keys import MEMBER_PREFIX, MESSAGE_PREFIX, row_item
from backend_flask.lib.errors import DatabaseUnavailable, DynamoDBUnavailable
from toolbox import settings

log = logging.getLogger(__name__)

DEMO_HANDLES = ("andrewbrown", "bayko")
# (index of the sender in the pair, text): the conversation of the original demo.
DEMO_MESSAGES = [
    (0, "Have you watched Babylon 5?"),
    (1, "Yes, I have. I love it!"),
    (0, "What's your favorite season?"),
    (1, "Season 3, when the Shadow War takes off."),
    (0, "Same. G'Kar's arc is the best thing in it."),
    (1, "And Londo's. Want to rewatch it together sometime?"),
]
BATCH_SIZE = 25            # the BatchWriteItem maximum
# Bulk seeding's own client: a busy DynamoDB Local can take seconds per batch, which is no reason to stop.
SEED_TIMEOUT = 30.0
SEED_MAX_ATTEMPTS = 10
BATCH_ATTEMPTS = 10        # calls per batch before unprocessed items count as a failure
BULK_SPACING = timedelta(seconds=45)


def users_by_handle(connection_url: str, handles: Iterable[str]) -> list[dict]:
    """Return {uuid, handle, display_name} of each handle (any case) from Postgres; LookupError if unknown."""
    handles = list(handles)
    try:
        with psycopg.connect(connection_url, row_factory=dict_row, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT uuid::text AS uuid, handle, display_name FROM public.users "
                "WHERE lower(handle) = ANY(%(handles)s)",
                {"handles": [h.lower() for h in handles]},
            ).fetchall()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(detail=f"Postgres unreachable: {exc}".splitlines()[0]) from exc
    found = {row["handle"].lower(): row for row in rows}
    missing = [h for h in handles if h.lower() not in found]
    if missing:
        raise LookupError(f"no user with handle {', '.join(missing)} in Postgres (run bin/db/seed?)")
    return [dict(found[h.lower()]) for h in handles]


def seed_demo_conversation(table: MessagesTable, connection_url: str, *,
                           handles: Iterable[str] = DEMO_HANDLES) -> str | None:
    """Write the demo conversation of two Postgres users unless it exists; return its id if written."""
    sender, receiver = users_by_handle(connection_url, handles)
    return write_demo_conversation(table, sender, receiver)


def write_demo_conversation(table: MessagesTable, sender: dict, receiver: dict, *,
                            messages: list[tuple[int, str]] = DEMO_MESSAGES) -> str | None:
    """Write a conversation of the pair through patterns C and D unless one exists; return its id if written."""
    pair = (sender, receiver)
    group = ddb.pair_group_uuid(sender["uuid"], receiver["uuid"])
    if table.is_member(group, sender["uuid"]):
        log.info("conversation %s of %s and %s exists already", group, sender["handle"], receiver["handle"])
        return None
    (first_from, first_text), *rest = messages
    last = table.create_message_group(sender=pair[first_from], receiver=pair[1 - first_from], message=first_text)
    for index, text in rest:
        last = table.create_message(message_group_uuid=group, sender=pair[index], message=text)
    # The stream Lambda does this too when it runs; doing it here keeps a stack without it consistent.
    table.move_message_groups(group, last["created_at"], last["message"])
    return group


def patient_table(config: Config) -> MessagesTable:
    """Return the config's table over a client with seeding's own patient timeouts and retries.

    The API's client gives up after DDB_TIMEOUT x DDB_MAX_ATTEMPTS (2 s x 3):
    right for a request, too short for a long batch load on a busy machine.
    """
    return settings.messages_table(config, timeout=SEED_TIMEOUT, max_attempts=SEED_MAX_ATTEMPTS)


def seed_messages(table: MessagesTable, sender: dict, receiver: dict, count: int, *,
                  progress: Callable[[int, int], None] | None = None, workers: int = 4) -> dict:
    """Give the pair's conversation (created if missing) a seeded history of `count` older messages.

    Message n (0 = newest) of the history has a fixed time, 45 s apart going
    back from just before the conversation started, and a fixed uuid, so the
    history is the same on every run: a rerun writes only what an earlier,
    interrupted run left out, and never adds `count` more.
    Returns {message_group_uuid, messages, existing, written}.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    write_demo_conversation(table, sender, receiver)
    group = ddb.pair_group_uuid(sender["uuid"], receiver["uuid"])
    anchor = _conversation_start(table, group) - timedelta(seconds=1)
    pair = (sender, receiver)
    times = [ddb.to_iso(anchor - n * BULK_SPACING) for n in range(count)]
    existing = _message_times(table, group, times[-1], times[0]) if count else set()
    wanted = [n for n in range(count) if times[n] not in existing]
    already = count - len(wanted)
    namespace = uuid.UUID(group)

    def items() -> Iterator[dict]:
        for n in wanted:
            yield ddb.message_item(group, times[n], str(uuid.uuid5(namespace, f"seeded message {n}")),
                                   pair[n % 2], f"seeded message {n + 1} before the conversation")

    def report(done: int, _total: int) -> None:
        if progress:
            progress(already + done, count)

    if progress and already:
        progress(already, count)
    written = batch_write(table, items(), progress=report, total=len(wanted), workers=workers)
    return {"message_group_uuid": group, "messages": count, "existing": already, "written": written}


def seed_conversation_rows(table: MessagesTable, owner: dict, count: int, *, workers: int = 4) -> int:
    """Write `count` conversation rows of `owner` directly in bulk (benchmarks); return how many.

    Each row names a made-up other participant and a conversation of its own,
    whose last message that participant sent (one unread), 45 s apart going
    back from now. Only the owner's rows are written: no
    messages, memberships or other side behind them, so they are for reading
    pattern B at size, not for the API to post into.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    start = datetime.now(timezone.utc) - timedelta(seconds=1)

    def items() -> Iterator[dict]:
        for n in range(count):
            other = {"uuid": str(uuid.uuid4()), "display_name": f"Bulk {n}", "handle": f"bulk{n}"}
            yield row_item(owner=owner, other=other, group=str(uuid.uuid4()), sender=other,
                           sk=ddb.to_iso(start - n * BULK_SPACING), message=f"bulk conversation {n}")

    return batch_write(table, items(), total=count, workers=workers)


def _conversation_start(table: MessagesTable, group: str) -> datetime:
    """Return when the conversation started: its membership items' time (fixed, unlike its oldest message)."""
    with translate_errors():
        response = table.client.query(TableName=table.name, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": MEMBER_PREFIX + group}},
                                      ConsistentRead=True)
    started = [ddb.from_item(item).get("created_at") for item in response.get("Items", [])]
    started = [t for t in started if ddb.is_timestamp(t)]
    if not started:
        raise LookupError(f"conversation {group} has no membership items to date it by")
    return datetime.fromisoformat(min(started).replace("Z", "+00:00"))


def _message_times(table: MessagesTable, group: str, oldest: str, newest: str) -> set[str]:
    """Return the sort keys of the group's messages between two times (inclusive)."""
    kwargs: dict[str, Any] = {
        "TableName": table.name, "KeyConditionExpression": "pk = :pk AND sk BETWEEN :oldest AND :newest",
        "ExpressionAttributeValues": {":pk": {"S": MESSAGE_PREFIX + group}, ":oldest": {"S": oldest},
                                      ":newest": {"S": newest}},
        "ProjectionExpression": "sk", "ConsistentRead": True,
    }
    found: set[str] = set()
    with translate_errors():
        while True:
            response = table.client.query(**kwargs)
            found.update(item["sk"]["S"] for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return found
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def batch_write(table: MessagesTable, items: Iterable[dict], *, progress: Callable[[int, int], None] | None = None,
                total: int = 0, workers: int = 4) -> int:
    """Put plain-dict items with BatchWriteItem, retrying unprocessed ones with backoff; return how many."""
    batches = _chunks((ddb.to_item(item) for item in items), BATCH_SIZE)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # A bounded window of batches in flight keeps memory flat for any size.
        pending: list = []
        for batch in batches:
            pending.append(pool.submit(_write_batch, table, batch))
            if len(pending) >= workers * 2:
                done += pending.pop(0).result()
                if progress:
                    progress(done, total)
        for future in pending:
            done += future.result()
            if progress:
                progress(done, total)
    return done


def _write_batch(table: MessagesTable, batch: list[dict[str, Any]]) -> int:
    requests = {table.name: [{"PutRequest": {"Item": item}} for item in batch]}
    for attempt in range(BATCH_ATTEMPTS):
        with translate_errors():
            response = table.client.batch_write_item(RequestItems=requests)
        requests = response.get("UnprocessedItems") or {}
        if not requests:
            return len(batch)
        time.sleep(min(2.0, 0.05 * 2 ** attempt))
    raise DynamoDBUnavailable(detail=f"{sum(len(r) for r in requests.values())} items still unprocessed after "
                              f"{BATCH_ATTEMPTS} attempts")


def _chunks(values: Iterable, size: int) -> Iterator[list]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk
