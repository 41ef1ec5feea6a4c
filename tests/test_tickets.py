"""lib/ddb/tickets.py: one-time stream tickets against the session's DynamoDB Local."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

from backend_flask.lib import ddb
from backend_flask.lib.ddb.tickets import ticket_key


def someone() -> dict:
    return {"uuid": str(uuid.uuid4()), "handle": f"t{uuid.uuid4().hex[:8]}", "display_name": "Tess"}


def test_a_ticket_is_redeemed_once_for_the_user_it_was_issued_to(messages: ddb.MessagesTable):
    user = someone()
    issued = messages.issue_ticket(user, token_expires_at=1_900_000_000)
    assert 29 <= datetime.fromisoformat(issued["expires_at"]).timestamp() - time.time() <= 31
    assert messages.redeem_ticket(issued["ticket"]) == {"user": user, "token_expires_at": 1_900_000_000}
    assert messages.redeem_ticket(issued["ticket"]) is None


def test_the_table_keeps_a_hash_of_the_ticket_with_a_ttl(messages: ddb.MessagesTable, ddb_client):
    issued = messages.issue_ticket(someone(), token_expires_at=1_900_000_000)
    key = ticket_key(issued["ticket"])
    item = ddb.from_item(ddb_client.get_item(TableName=messages.name, Key=key, ConsistentRead=True)["Item"])
    assert item["pk"].startswith(ddb.TICKET_PREFIX) and issued["ticket"] not in str(item)
    assert 0 < int(item[ddb.TTL_ATTRIBUTE]) - time.time() <= 32


def test_an_expired_ticket_is_refused(messages: ddb.MessagesTable):
    issued = messages.issue_ticket(someone(), token_expires_at=1_900_000_000, valid_seconds=0.1)
    time.sleep(max(0.0, datetime.fromisoformat(issued["expires_at"]).timestamp() - time.time()) + 0.05)
    assert messages.redeem_ticket(issued["ticket"]) is None


def test_of_many_simultaneous_redemptions_exactly_one_wins(messages: ddb.MessagesTable):
    # GIVEN one ticket and ten threads (standing in for ten API processes) released together
    issued = messages.issue_ticket(someone(), token_expires_at=1_900_000_000)
    start, results = threading.Barrier(10), []

    def redeem():
        start.wait(10)
        results.append(messages.redeem_ticket(issued["ticket"]))

    threads = [threading.Thread(target=redeem) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # THEN exactly one of them got the user
    assert len(results) == 10 and sum(r is not None for r in results) == 1


def test_what_is_not_a_ticket_redeems_nothing(messages: ddb.MessagesTable):
    for value in ("", "x" * 129, "never-issued", None, 42):
        assert messages.redeem_ticket(value) is None
