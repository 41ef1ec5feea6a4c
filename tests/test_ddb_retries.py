"""Writes whose reply is lost: botocore retries them, and nothing is stored twice (issue 11, item 1).

A FaultProxy sits between the client and the session's DynamoDB Local. It
forwards one chosen request, lets DynamoDB Local do the write, and keeps the
reply from the client until the client's read timeout fires; botocore then
sends the same request again, which finds its own first attempt in the way.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from backend_flask import clients
from backend_flask.app import create_app
from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client
from tests.test_ddb import partition, person, rows_of
from toolbox import seed
from toolbox.fault_proxy import FaultProxy

PUT_ITEM = b"DynamoDB_20120810.PutItem"
TRANSACT = b"DynamoDB_20120810.TransactWriteItems"
READ_TIMEOUT = 1.0   # how long the client waits for a held reply before it retries


@pytest.fixture
def proxy(config) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's DynamoDB Local."""
    port = int(config.aws_endpoint_url.rsplit(":", 1)[1])
    with FaultProxy(port) as running:
        yield running


@pytest.fixture
def proxied(proxy, config) -> ddb.MessagesTable:
    """The session's table through the proxy, with a short read timeout and room for retries."""
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=proxy.url, timeout=READ_TIMEOUT,
                         max_attempts=5)
    return ddb.MessagesTable(client, config.ddb_message_table)


@pytest.fixture
def proxied_app(proxy, config):
    """The API with its DynamoDB behind the proxy."""
    app = create_app(config.replace(aws_endpoint_url=proxy.url, ddb_timeout=READ_TIMEOUT, ddb_max_attempts=5))
    yield app
    clients.close(app)


def message_uuids(ddb_client, table: str, group: str) -> Counter:
    return Counter(m["message_uuid"] for m in partition(ddb_client, table, f"MSG#{group}"))


def test_an_append_whose_reply_is_lost_is_stored_once_and_answered_once(proxied_app, proxy, alice, bob,
                                                                        ddb_client, config):
    client = proxied_app.test_client()
    started = client.post("/api/messages", headers=alice["headers"], json={"message": "hi", "handle": bob["handle"]})
    assert started.status_code == 200, started.json
    group = started.json["message_group_uuid"]
    # GIVEN the reply to the next PutItem (pattern D's message) is lost on its way back
    proxy.hold_reply(PUT_ITEM)
    puts_before = proxy.count(PUT_ITEM)
    # WHEN bob appends without an idempotency key
    answer = client.post("/api/messages", headers=bob["headers"], json={"message": "once", "message_group_uuid": group})
    # THEN botocore sent the put again, and bob got one 200 for one stored message
    assert proxy.count(PUT_ITEM) - puts_before >= 2
    assert answer.status_code == 200, answer.json
    stored = message_uuids(ddb_client, config.ddb_message_table, group)
    assert stored == Counter({started.json["uuid"]: 1, answer.json["uuid"]: 1})


def test_a_new_conversation_whose_reply_is_lost_is_stored_once(proxied_app, proxy, alice, bob, ddb_client, config):
    client = proxied_app.test_client()
    # GIVEN the reply to the next transaction (pattern C) is lost on its way back
    proxy.hold_reply(TRANSACT)
    # WHEN alice starts a conversation with bob
    answer = client.post("/api/messages", headers=alice["headers"], json={"message": "hi", "handle": bob["handle"]})
    # THEN the transaction was sent again, alice got one 200, and everything exists once
    assert proxy.count(TRANSACT) >= 2
    assert answer.status_code == 200, answer.json
    group = answer.json["message_group_uuid"]
    table = config.ddb_message_table
    assert message_uuids(ddb_client, table, group) == Counter({answer.json["uuid"]: 1})
    for owner in (alice, bob):
        assert [r["message"] for r in rows_of(ddb_client, table, owner, group)] == ["hi"]
    assert len(partition(ddb_client, table, f"MBR#{group}")) == 2


def fresh_token_per_attempt(request, **_) -> None:
    """A before-send hook: give each attempt of a transaction a new ClientRequestToken.

    botocore repeats the token on its retries, and DynamoDB then answers a
    repeated transaction with success; a retry the service cannot recognise
    (another SDK, or one past the token's 10 minutes) fails its conditions on
    the items of its own first attempt instead. (DynamoDB Local checks no
    signatures, so the body may change after signing.)
    """
    body = json.loads(request.body)
    body["ClientRequestToken"] = str(uuid.uuid4())
    request.body = json.dumps(body).encode()
    request.headers["Content-Length"] = str(len(request.body))


def test_a_new_conversation_whose_retry_is_not_recognised_as_one_is_still_stored_once(proxied, proxy, ddb_client,
                                                                                       config):
    table = config.ddb_message_table
    proxied.client.meta.events.register("before-send.dynamodb.TransactWriteItems", fresh_token_per_attempt)
    a, b = person("ann"), person("bob")
    # GIVEN the reply to pattern C's transaction is lost, and its retry looks like a new transaction
    proxy.hold_reply(TRANSACT)
    # WHEN a starts a conversation with b
    answer = proxied.create_message_group(sender=a, receiver=b, message="hi")
    # THEN the retry found its own first attempt in the way: success, with the message stored once
    assert proxy.count(TRANSACT) >= 2
    group = answer["message_group_uuid"]
    assert message_uuids(ddb_client, table, group) == Counter({answer["uuid"]: 1})
    assert [m["created_at"] for m in proxied.list_messages(group)["items"]] == [answer["created_at"]]


def test_moves_whose_reply_is_lost_leave_one_row_per_owner(proxied, proxy, ddb_client, config):
    table = config.ddb_message_table
    direct = ddb.MessagesTable(ddb_client, table)
    a, b = person("ann"), person("bob")
    group = direct.create_message_group(sender=a, receiver=b, message="first")["message_group_uuid"]
    reply = direct.create_message(message_group_uuid=group, sender=b, message="second")
    # GIVEN the replies to the next two transactions (pattern E's moves) are lost
    proxy.hold_reply(TRANSACT, times=2)
    # WHEN pattern E moves both rows to the reply
    proxied.move_message_groups(group, reply["created_at"], reply["message"])
    # THEN the moves were retried, and each owner has one row, on the reply
    assert proxy.count(TRANSACT) >= 3
    for owner in (a, b):
        rows = rows_of(ddb_client, table, owner, group)
        assert [(r["message"], r["last_message_at"]) for r in rows] == [("second", reply["created_at"])]


def test_read_state_updates_whose_reply_is_lost_are_applied_once(proxied, proxy, ddb_client, config):
    table = config.ddb_message_table
    direct = ddb.MessagesTable(ddb_client, table)
    a, b = person("ann"), person("bob")
    first = direct.create_message_group(sender=a, receiver=b, message="first")
    group = first["message_group_uuid"]
    direct.mark_read(group, b["uuid"], first["created_at"])
    # GIVEN the reply to the next PutItem (pattern E updating a row in place) is lost
    proxy.hold_reply(PUT_ITEM)
    # WHEN pattern E settles bob's read marker
    proxied.settle(group, reads={b["uuid"]: first["created_at"]})
    # THEN bob's row says he has read everything, once
    assert proxy.count(PUT_ITEM) >= 2
    [row] = rows_of(ddb_client, table, b, group)
    assert (row["read_at"], int(row["unread"])) == (first["created_at"], 0)


def test_seeding_whose_replies_are_lost_writes_each_message_once(proxied, proxy, ddb_client, config):
    table = config.ddb_message_table
    a, b = person("ann"), person("bob")
    # GIVEN the replies to the first transaction (C) and the first PutItem (D) are lost
    proxy.hold_reply(TRANSACT)
    proxy.hold_reply(PUT_ITEM)
    # WHEN the demo conversation is seeded
    group = seed.write_demo_conversation(proxied, a, b)
    # THEN each demo message is stored once, in order, and both rows show the last one
    assert proxy.count(TRANSACT) >= 2 and proxy.count(PUT_ITEM) >= 2
    texts = [m["message"] for m in partition(ddb_client, table, f"MSG#{group}")]
    assert texts == [text for _, text in seed.DEMO_MESSAGES]
    for owner in (a, b):
        assert [r["message"] for r in rows_of(ddb_client, table, owner, group)] == [seed.DEMO_MESSAGES[-1][1]]


def test_a_backfilled_membership_whose_reply_is_lost_counts_as_there(proxied, proxy, ddb_client, config):
    table = config.ddb_message_table
    group, owner = str(uuid.uuid4()), str(uuid.uuid4())
    # GIVEN the reply to the membership's conditional put is lost
    proxy.hold_reply(PUT_ITEM)
    # WHEN the membership is backfilled
    proxied.backfill_membership(group, {owner})
    # THEN the retry found it in place: one membership, no error
    assert proxy.count(PUT_ITEM) >= 2
    assert [m["sk"] for m in partition(ddb_client, table, f"MBR#{group}")] == [owner]
