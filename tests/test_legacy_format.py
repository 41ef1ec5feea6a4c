"""Conversations written by the original bootcamp code: readable, writable, migrated (issue 11, item 2)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from backend_flask.config import ROOT
from backend_flask.lib import ddb
from tests.test_ddb import partition
from toolbox.settings import messages_table


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


# ------------------------------------------------------------------ bin/ddb/migrate

def run_migrate(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "bin" / "ddb" / "migrate"), *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.fixture
def own_table(script_env, config) -> Iterator[tuple[dict, ddb.MessagesTable]]:
    """A script environment whose table is this test's own (created, deleted afterwards), and that table."""
    table = messages_table(config.replace(ddb_message_table=f"migrate-{uuid.uuid4().hex[:10]}"))
    table.create()
    yield {**script_env, "DDB_MESSAGE_TABLE": table.name}, table
    table.delete()


def people(n: int) -> list[dict]:
    return [{"uuid": str(uuid.uuid4()), "handle": f"p{i}{uuid.uuid4().hex[:6]}", "display_name": f"P {i}"}
            for i in range(n)]


def members(table: ddb.MessagesTable, group: str) -> set[str]:
    return {m["sk"] for m in partition(table.client, table.name, f"MBR#{group}")}


def test_migrate_backfills_every_bootcamp_conversation_resumably_and_only_once(own_table, tmp_path):
    env, table = own_table
    state = tmp_path / "state.json"
    # GIVEN three conversations in the bootcamp format and one in this backend's
    a, b, c, d = people(4)
    legacy = {bootcamp_conversation(table.client, table.name, x, y, ["hi", "ho"]): {x["uuid"], y["uuid"]}
              for x, y in ((a, b), (a, c), (c, d))}
    current = table.create_message_group(sender=b, receiver=d, message="new")["message_group_uuid"]
    # WHEN migrate runs one small page, stops, and is resumed
    first = run_migrate("--page-size", "2", "--max-pages", "1", "--state", str(state), env=env)
    assert first.returncode == 0, first.stderr
    assert "stopped after 1 pages" in first.stdout and "page 1:" in first.stderr
    assert json.loads(state.read_text())["position"]
    rest = run_migrate("--resume", "--page-size", "2", "--state", str(state), env=env)
    # THEN it finished where the first run stopped, counted everything once, and forgot its state
    assert rest.returncode == 0, rest.stderr
    assert "resuming" in rest.stderr and "page 2:" in rest.stderr
    assert "8 conversation rows: wrote 6 membership items, 2 already there" in rest.stdout
    assert not state.exists()
    # AND every participant of every conversation is a member, the new one untouched
    for group, pair in legacy.items():
        assert members(table, group) == pair
    assert members(table, current) == {b["uuid"], d["uuid"]}
    # AND a second run finds nothing to do
    again = run_migrate("--state", str(state), env=env)
    assert again.returncode == 0, again.stderr
    assert "wrote 0 membership items, 8 already there" in again.stdout


def test_migrate_never_replaces_a_membership_written_meanwhile(own_table):
    env, table = own_table
    a, b = people(2)
    group = bootcamp_conversation(table.client, table.name, a, b, ["hi"])
    # GIVEN b has read the conversation through the API since (membership backfilled, read marker set)
    assert table.is_member(group, b["uuid"])
    marker = table.list_messages(group)["items"][-1]["created_at"]
    assert table.mark_read(group, b["uuid"], marker) == marker
    # WHEN migrate runs
    result = run_migrate(env=env)
    # THEN b's read marker is still there
    assert result.returncode == 0, result.stderr
    assert table.membership(group, b["uuid"]) == {"last_read_at": marker}


def test_migrate_dry_run_counts_and_writes_nothing(own_table):
    env, table = own_table
    a, b = people(2)
    group = bootcamp_conversation(table.client, table.name, a, b, ["hi"])
    result = run_migrate("--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "would write 2 membership items" in result.stdout
    assert members(table, group) == set()


def test_migrate_resume_without_a_saved_run_is_one_line(own_table, tmp_path):
    env, _ = own_table
    result = run_migrate("--resume", "--state", str(tmp_path / "none.json"), env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: nothing to resume") and result.stderr.count("\n") == 1
