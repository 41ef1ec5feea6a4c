"""Read state: unread counts and read markers, exact under concurrency, redelivery and reordering."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import pytest
from boto3.dynamodb.types import TypeSerializer

from backend_flask.lib import ddb
from tests.helpers import concurrently
from toolbox import stream_runner as runner_module

SETTLE_SECONDS = 60.0   # how long the stream runner may take to catch up (generous: a busy machine)
handler = runner_module.load_handler_module()


def post(client, user: dict, body: dict) -> dict:
    response = client.post("/api/messages", json=body, headers=user["headers"])
    assert response.status_code == 200, response.json
    return response.json


def row_of(client, user: dict, group: str) -> dict:
    """The user's conversation row for the group, as GET /api/message_groups shows it."""
    response = client.get("/api/message_groups?limit=100", headers=user["headers"])
    assert response.status_code == 200
    [row] = [r for r in response.json if r["uuid"] == group]
    return row


def stored(messages: ddb.MessagesTable, group: str) -> tuple[list[dict], dict[str, str]]:
    """Every message of the group (oldest first) and every member's explicit marker, read consistently."""
    items, kwargs = [], {}
    while True:
        response = messages.client.query(TableName=messages.name, KeyConditionExpression="pk = :pk",
                                         ExpressionAttributeValues={":pk": {"S": f"MSG#{group}"}},
                                         ConsistentRead=True, **kwargs)
        items += [ddb.from_item(i) for i in response["Items"]]
        if "LastEvaluatedKey" not in response:
            break
        kwargs = {"ExclusiveStartKey": response["LastEvaluatedKey"]}
    members = messages.client.query(TableName=messages.name, KeyConditionExpression="pk = :pk",
                                    ExpressionAttributeValues={":pk": {"S": f"MBR#{group}"}},
                                    ConsistentRead=True)["Items"]
    markers = {m["sk"]["S"]: m["last_read_at"]["S"] for m in members if "last_read_at" in m}
    return items, markers


def expected_unread(items: list[dict], markers: dict[str, str], owner: str) -> int:
    """What the contract says: the other's messages after max(my marker, my own newest message)."""
    own = [m["sk"] for m in items if m["user_uuid"] == owner]
    marker = max([markers.get(owner, "")] + own)
    return sum(1 for m in items if m["user_uuid"] != owner and m["sk"] > marker)


def wait_until(check, what: str, timeout: float = SETTLE_SECONDS):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return last
        time.sleep(0.1)
    raise AssertionError(f"not settled within {timeout}s: {what}; last seen {last}")


def settled_rows(client, messages, group, people) -> tuple[bool, dict]:
    """(whether both rows match the stored messages and markers, what the rows say)."""
    items, markers = stored(messages, group)
    rows = {p["handle"]: row_of(client, p, group) for p in people}
    want = {p["handle"]: expected_unread(items, markers, p["uuid"]) for p in people}
    newest = items[-1]["sk"]
    ok = all(rows[p["handle"]]["unread_count"] == want[p["handle"]] and rows[p["handle"]]["created_at"] == newest
             for p in people)
    return ok, {"rows": {h: (r["unread_count"], r["created_at"]) for h, r in rows.items()}, "want": want}


# ------------------------------------------------------------------ contract

def test_a_new_message_is_unread_for_the_receiver_and_read_for_the_sender(client, alice, bob, stream_runner):
    # GIVEN alice writes to bob, then twice more
    group = post(client, alice, {"handle": bob["handle"], "message": "one"})["message_group_uuid"]
    post(client, alice, {"message_group_uuid": group, "message": "two"})
    last = post(client, alice, {"message_group_uuid": group, "message": "three"})
    # THEN once the stream handler ran, bob has three unread, alice none, and bob has read nothing of alice's
    wait_until(lambda: (row_of(client, bob, group)["unread_count"] == 3, row_of(client, bob, group)), "bob's 3")
    mine = row_of(client, alice, group)
    assert mine["unread_count"] == 0 and mine["peer_last_read_at"] is None
    assert row_of(client, bob, group)["peer_last_read_at"] == last["created_at"]  # alice read her own


def test_opening_the_latest_page_marks_it_read_and_the_sender_sees_it(client, alice, bob, stream_runner):
    group = post(client, alice, {"handle": bob["handle"], "message": "hi"})["message_group_uuid"]
    last = post(client, alice, {"message_group_uuid": group, "message": "are you there?"})
    # WHEN bob opens the conversation (its latest page)
    assert client.get(f"/api/messages/{group}", headers=bob["headers"]).status_code == 200
    # THEN bob's unread drops to 0 and alice sees bob's marker on her row
    wait_until(lambda: (row_of(client, bob, group)["unread_count"] == 0 and
                        row_of(client, alice, group)["peer_last_read_at"] == last["created_at"],
                        (row_of(client, bob, group), row_of(client, alice, group))), "bob read")


def test_an_older_page_moves_no_marker(client, alice, bob):
    group = post(client, alice, {"handle": bob["handle"], "message": "m0"})["message_group_uuid"]
    for i in range(1, 4):
        post(client, alice, {"message_group_uuid": group, "message": f"m{i}"})
    first = client.get(f"/api/messages/{group}?limit=2", headers=alice["headers"])
    cursor = first.headers["Link"].split("before=")[1].split(">")[0]
    # WHEN bob reads only an older page
    older = client.get(f"/api/messages/{group}?limit=2&before={cursor}", headers=bob["headers"])
    assert [m["message"] for m in older.json] == ["m0", "m1"]
    # THEN his marker has not moved: marking read now still finds four unread messages before it moves
    state = client.post(f"/api/message_groups/{group}/read", json={"created_at": older.json[0]["created_at"]},
                        headers=bob["headers"]).json
    assert state["last_read_at"] == older.json[0]["created_at"] and state["unread_count"] == 3


def test_mark_read_defaults_to_the_newest_and_never_moves_backwards(client, alice, bob):
    group = post(client, alice, {"handle": bob["handle"], "message": "a"})["message_group_uuid"]
    b = post(client, alice, {"message_group_uuid": group, "message": "b"})
    # WHEN bob marks read without a body THEN his marker is on the newest message, nothing unread
    state = client.post(f"/api/message_groups/{group}/read", headers=bob["headers"])
    assert state.status_code == 200
    assert state.json == {"message_group_uuid": group, "last_read_at": b["created_at"], "unread_count": 0}
    # WHEN he then marks an older message THEN the marker stays on the newest
    older = client.get(f"/api/messages/{group}", headers=bob["headers"]).json[0]["created_at"]
    again = client.post(f"/api/message_groups/{group}/read", json={"created_at": older}, headers=bob["headers"])
    assert again.json["last_read_at"] == b["created_at"]


@pytest.mark.parametrize(("body", "code"), [({"created_at": "2001-01-01T00:00:00.000000+00:00"},
                                              "created_at_not_a_message"),
                                             ({"created_at": "yesterday"}, "created_at_invalid"),
                                             ({"created_at": "2026-11-22T08:03:06.045123+00:00\n"},
                                              "created_at_invalid")])
def test_a_marker_on_something_that_is_not_a_message_of_the_conversation_is_422(client, alice, bob, body, code):
    group = post(client, alice, {"handle": bob["handle"], "message": "x"})["message_group_uuid"]
    response = client.post(f"/api/message_groups/{group}/read", json=body, headers=bob["headers"])
    assert (response.status_code, response.json) == (422, [code])


def test_a_message_of_another_conversation_is_not_a_marker_here(client, alice, bob, carol):
    group = post(client, alice, {"handle": bob["handle"], "message": "x"})["message_group_uuid"]
    other = post(client, alice, {"handle": carol["handle"], "message": "y"})
    response = client.post(f"/api/message_groups/{group}/read", json={"created_at": other["created_at"]},
                           headers=bob["headers"])
    assert (response.status_code, response.json) == (422, ["created_at_not_a_message"])


def test_outsiders_get_404_and_move_nothing(client, messages, alice, bob, carol):
    group = post(client, alice, {"handle": bob["handle"], "message": "x"})["message_group_uuid"]
    response = client.post(f"/api/message_groups/{group}/read", headers=carol["headers"])
    assert (response.status_code, response.json) == (404, ["message_group_not_found"])
    assert stored(messages, group)[1] == {}


# ------------------------------------------------------------------ exact under concurrency

def test_twenty_senders_and_random_readers_leave_exact_counts_on_both_sides(client, messages, alice, bob,
                                                                             stream_runner):
    # GIVEN a conversation
    group = post(client, alice, {"handle": bob["handle"], "message": "start"})["message_group_uuid"]
    people = (alice, bob)

    def send_or_read(n: int) -> None:
        if n == 20:  # one reader, at random moments, on either side
            for _ in range(10):
                time.sleep(random.uniform(0, 0.05))
                reader = random.choice(people)
                if random.random() < 0.5:
                    assert client.get(f"/api/messages/{group}", headers=reader["headers"]).status_code == 200
                else:
                    assert client.post(f"/api/message_groups/{group}/read",
                                       headers=reader["headers"]).status_code == 200
            return
        for i in range(5):
            sender = people[n % 2] if n < 4 else alice   # mostly alice; some threads as bob
            post(client, sender, {"message_group_uuid": group, "message": f"t{n} m{i}"})

    # WHEN 20 threads send 5 messages each while both read at random moments
    concurrently(send_or_read, [(n,) for n in range(21)])
    # THEN, once the stream settles, both rows say exactly what the stored messages and markers say
    wait_until(lambda: settled_rows(client, messages, group, people), "exact unread on both sides")


# ------------------------------------------------------------------ redelivery and reordering

def _records(messages: ddb.MessagesTable, group: str) -> list[dict]:
    """The group's messages (INSERT) and markers (MODIFY) as Lambda's stream records, oldest first."""
    serializer = TypeSerializer()
    items, _markers = stored(messages, group)
    members = messages.client.query(TableName=messages.name, KeyConditionExpression="pk = :pk",
                                    ExpressionAttributeValues={":pk": {"S": f"MBR#{group}"}},
                                    ConsistentRead=True)["Items"]
    records = []
    for n, (name, image) in enumerate([("INSERT", {k: serializer.serialize(v) for k, v in m.items()})
                                       for m in items] + [("MODIFY", m) for m in members]):
        records.append({"eventName": name, "eventSource": "aws:dynamodb",
                        "dynamodb": {"Keys": {"pk": image["pk"], "sk": image["sk"]}, "NewImage": image,
                                     "SequenceNumber": f"{n:021d}", "StreamViewType": "NEW_IMAGE"}})
    return records


def _rows(messages: ddb.MessagesTable, group: str, people) -> dict:
    return {p["handle"]: {k: v for k, v in next(r for r in messages.list_message_groups(p["uuid"], limit=100)["items"]
                                                if r["uuid"] == group).items()}
            for p in people}


def test_replayed_and_reordered_batches_change_no_count(client, messages, alice, bob, stream_runner):
    # GIVEN a conversation with messages both ways and a marker, settled by the stream runner
    people = (alice, bob)
    group = post(client, alice, {"handle": bob["handle"], "message": "one"})["message_group_uuid"]
    for i in range(4):
        post(client, people[i % 2], {"message_group_uuid": group, "message": f"reply {i}"})
    middle = client.get(f"/api/messages/{group}", headers=bob["headers"]).json[2]["created_at"]
    client.post(f"/api/message_groups/{group}/read", json={"created_at": middle}, headers=bob["headers"])
    post(client, alice, {"message_group_uuid": group, "message": "after bob read"})
    settled = wait_until(lambda: settled_rows(client, messages, group, people), "first settle")
    before = _rows(messages, group, people)
    records = _records(messages, group)
    # WHEN the whole history is delivered again, in order, reversed, one record per batch, and shuffled
    batches = [records, list(reversed(records)), *[[r] for r in reversed(records)],
               random.sample(records, len(records))]
    for batch in batches:
        assert handler.process_batch({"Records": batch}, messages) == {"batchItemFailures": []}
    # THEN every count, marker and last message is what it was
    assert _rows(messages, group, people) == before, settled


def test_a_message_committed_after_a_newer_one_was_counted_is_still_counted(client, messages, alice, bob,
                                                                            stream_runner):
    # GIVEN bob has two unread messages, counted by the stream handler
    people = (alice, bob)
    group = post(client, alice, {"handle": bob["handle"], "message": "one"})["message_group_uuid"]
    first = post(client, alice, {"message_group_uuid": group, "message": "two"})
    wait_until(lambda: settled_rows(client, messages, group, people), "two unread")
    # WHEN a message timed before the newest one lands only now (a slow writer: its record comes last)
    earlier = ddb.to_iso(datetime.fromisoformat(first["created_at"]) - timedelta(microseconds=1))
    late = ddb.message_item(group, earlier, "late-message",
                            {"uuid": alice["uuid"], "display_name": alice["display_name"],
                             "handle": alice["handle"]}, "slow")
    messages.client.put_item(TableName=messages.name, Item=ddb.to_item(late))
    # THEN it is counted too: bob has three unread, and the last message is still "two"
    rows = wait_until(lambda: settled_rows(client, messages, group, people), "late message counted")
    assert rows["rows"][bob["handle"]][0] == 3, rows
