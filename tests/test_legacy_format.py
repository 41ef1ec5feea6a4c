"""Conversations written by the original bootcamp code: readable, writable, migrated (issue 11, item 2)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from backend_flask.lib import ddb
from tests.test_ddb import partition


def bootcamp_conversation(client, table: str, me: dict, other: dict, texts: list[str]) -> str:
    """Write a conversation exactly as the original bootcamp code did; return its message_group_uuid.

    Its ddb.py put two group rows (GRP#<owner>, sk = the last message's time,
    the OTHER participant's uuid, display name and handle) and the messages
    (MSG#<group>), with times from `datetime.now(timezone.utc).astimezone()`
    (UTC on its Gitpod machines) and a random uuid4 as the group id. There
    were no membership items.
    """
    group = str(uuid.uuid4())
    start = datetime.now(timezone.utc).astimezone() - timedelta(days=3)
    times = [(start + timedelta(minutes=n)).isoformat() for n in range(len(texts))]
    for n, (text, at) in enumerate(zip(texts, times, strict=True)):
        sender = (me, other)[n % 2]
        client.put_item(TableName=table, Item={
            "pk": {"S": f"MSG#{group}"}, "sk": {"S": at}, "message_uuid": {"S": str(uuid.uuid4())},
            "message": {"S": text}, "user_uuid": {"S": sender["uuid"]},
            "user_display_name": {"S": sender["display_name"]}, "user_handle": {"S": sender["handle"]}})
    for owner, shown in ((me, other), (other, me)):
        client.put_item(TableName=table, Item={
            "pk": {"S": f"GRP#{owner['uuid']}"}, "sk": {"S": times[-1]}, "message_group_uuid": {"S": group},
            "message": {"S": texts[-1]}, "user_uuid": {"S": shown["uuid"]},
            "user_display_name": {"S": shown["display_name"]}, "user_handle": {"S": shown["handle"]}})
    return group


def test_both_members_of_a_bootcamp_conversation_read_and_append_and_an_outsider_gets_404(
        client, alice, bob, carol, ddb_client, config):
    table = config.ddb_message_table
    # GIVEN a conversation of alice and bob in the original bootcamp format (no membership items)
    group = bootcamp_conversation(ddb_client, table, alice, bob, ["Have you watched Babylon 5?", "Yes, I have."])
    assert partition(ddb_client, table, f"MBR#{group}") == []
    # WHEN carol, who is not in it, tries to read it and to write into it
    read = client.get(f"/api/messages/{group}", headers=carol["headers"])
    write = client.post("/api/messages", headers=carol["headers"], json={"message": "me too",
                                                                          "message_group_uuid": group})
    # THEN both are 404, and nothing was written: no message, no membership
    assert (read.status_code, read.json) == (404, ["message_group_not_found"])
    assert (write.status_code, write.json) == (404, ["message_group_not_found"])
    assert len(partition(ddb_client, table, f"MSG#{group}")) == 2
    assert partition(ddb_client, table, f"MBR#{group}") == []
    # WHEN alice and bob read it and each append a message
    for me, text in ((alice, "Season 3?"), (bob, "Season 3.")):
        page = client.get(f"/api/messages/{group}", headers=me["headers"])
        assert page.status_code == 200, page.json
        assert [m["message"] for m in page.json][:2] == ["Have you watched Babylon 5?", "Yes, I have."]
        sent = client.post("/api/messages", headers=me["headers"], json={"message": text,
                                                                          "message_group_uuid": group})
        assert sent.status_code == 200, sent.json
    # THEN both see all four messages in order, the group is in their lists, and they are members now
    page = client.get(f"/api/messages/{group}", headers=alice["headers"])
    assert [m["message"] for m in page.json] == ["Have you watched Babylon 5?", "Yes, I have.", "Season 3?",
                                                  "Season 3."]
    for me, other in ((alice, bob), (bob, alice)):
        listed = client.get("/api/message_groups", headers=me["headers"]).json
        assert [(g["uuid"], g["handle"]) for g in listed] == [(group, other["handle"])]
    assert {m["sk"] for m in partition(ddb_client, table, f"MBR#{group}")} == {alice["uuid"], bob["uuid"]}
    # AND carol is still refused
    again = client.get(f"/api/messages/{group}", headers=carol["headers"])
    assert again.status_code == 404


def test_membership_of_a_bootcamp_conversation_is_written_once_for_both(ddb_client, config):
    table = config.ddb_message_table
    messages = ddb.MessagesTable(ddb_client, table)
    a, b = ({"uuid": str(uuid.uuid4()), "handle": f"h{n}", "display_name": f"P{n}"} for n in (1, 2))
    group = bootcamp_conversation(ddb_client, table, a, b, ["one"])
    # WHEN the first member is checked twice and the other once
    assert messages.is_member(group, a["uuid"]) and messages.is_member(group, a["uuid"])
    assert messages.is_member(group, b["uuid"])
    # THEN both memberships were backfilled by the first check, one item each
    assert sorted(m["sk"] for m in partition(ddb_client, table, f"MBR#{group}")) == sorted([a["uuid"], b["uuid"]])
