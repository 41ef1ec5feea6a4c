"""The REST API end to end: every row of DESIGN.md's contract, every error code, on real services."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from backend_flask import clients
from backend_flask.app import create_app
from toolbox import local_services
from toolbox.settings import messages_table

MESSAGE_KEYS = {"uuid", "display_name", "handle", "message", "created_at"}


@pytest.fixture
def conversation(client, alice, bob) -> str:
    """The message_group_uuid of a conversation alice started with bob."""
    response = post(client, alice, message="hello bob", handle=bob["handle"])
    assert response.status_code == 200, response.json
    return response.json["message_group_uuid"]


def post(client, user, **body):
    return client.post("/api/messages", headers=user["headers"], json=body)


def messages_of(client, user, group: str, **query) -> list[dict]:
    response = client.get(f"/api/messages/{group}", headers=user["headers"], query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def next_link(response) -> dict | None:
    """Return the query of the Link rel="next" target, or None."""
    link = response.headers.get("Link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    url = urlsplit(match.group(1))
    return {"path": url.path, **{k: v[0] for k, v in parse_qs(url.query).items()}}


def assert_utc_iso(value: str) -> None:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timezone.utc.utcoffset(None)


# ------------------------------------------------------------------ GET /api/users/@<handle>/short

def test_user_short_returns_uuid_handle_display_name_any_case(client, alice, bob):
    response = client.get(f"/api/users/@{bob['handle'].upper()}/short", headers=alice["headers"])
    assert response.status_code == 200
    assert response.json == {"uuid": bob["uuid"], "handle": bob["handle"], "display_name": bob["display_name"]}


@pytest.mark.parametrize("handle", ["nobody-by-this-name", "x" * 300, "%00", "a%00b", "%F0%9F%98%80", "%ED%A0%80"])
def test_user_short_of_unknown_or_impossible_handle_is_404(client, alice, handle):
    response = client.get(f"/api/users/@{handle}/short", headers=alice["headers"])
    assert response.status_code == 404
    assert response.json == ["user_not_found"]


# ------------------------------------------------------------------ POST /api/messages (create, C)

def test_create_with_handle_returns_the_message_with_its_own_uuid_and_group(client, alice, bob):
    # WHEN alice writes to bob's handle
    response = post(client, alice, message="hello bob", handle=bob["handle"])
    # THEN she gets the new message, with the conversation's id
    assert response.status_code == 200
    body = response.json
    assert set(body) == MESSAGE_KEYS | {"message_group_uuid"}
    assert body["message"] == "hello bob"
    assert (body["handle"], body["display_name"]) == (alice["handle"], alice["display_name"])
    # the message's own uuid: not the sender's, not the receiver's, not the group's
    assert str(uuid.UUID(body["uuid"])) == body["uuid"]
    assert body["uuid"] not in {alice["uuid"], bob["uuid"], body["message_group_uuid"]}
    assert_utc_iso(body["created_at"])


def test_created_conversation_is_readable_by_both_and_listed_for_both(client, alice, bob, conversation):
    # THEN both participants read the first message
    for user in (alice, bob):
        items = messages_of(client, user, conversation)
        assert [(m["message"], m["handle"]) for m in items] == [("hello bob", alice["handle"])]
        assert set(items[0]) == MESSAGE_KEYS
    # AND each sees the conversation under the OTHER participant's name
    for me, other in ((alice, bob), (bob, alice)):
        response = client.get("/api/message_groups", headers=me["headers"])
        assert response.status_code == 200
        [row] = response.json
        assert {k: row[k] for k in ("uuid", "display_name", "handle", "message")} == {
            "uuid": conversation, "display_name": other["display_name"], "handle": other["handle"],
            "message": "hello bob"}
        assert isinstance(row["unread_count"], int) and "peer_last_read_at" in row
        assert_utc_iso(response.json[0]["created_at"])


def test_create_again_with_the_same_handle_continues_the_conversation(client, alice, bob, conversation):
    # WHEN either side writes to the other's handle again
    again = post(client, bob, message="hi alice", handle=alice["handle"])
    # THEN it lands in the same conversation
    assert again.status_code == 200
    assert again.json["message_group_uuid"] == conversation
    assert [m["message"] for m in messages_of(client, alice, conversation)] == ["hello bob", "hi alice"]


def test_create_to_unknown_handle_is_404_user_not_found_and_writes_nothing(client, alice):
    response = post(client, alice, message="anyone?", handle=f"ghost{uuid.uuid4().hex[:8]}")
    assert response.status_code == 404
    assert response.json == ["user_not_found"]
    assert client.get("/api/message_groups", headers=alice["headers"]).json == []


def test_messaging_yourself_is_422_cannot_message_self(client, alice):
    for handle in (alice["handle"], alice["handle"].upper()):
        response = post(client, alice, message="note to self", handle=handle)
        assert response.status_code == 422
        assert response.json == ["cannot_message_self"]
    assert client.get("/api/message_groups", headers=alice["headers"]).json == []


# ------------------------------------------------------------------ POST /api/messages (append, D)

def test_append_returns_the_message_without_a_group_key(client, alice, bob, conversation):
    # WHEN bob answers inside the conversation
    response = post(client, bob, message="hi alice", message_group_uuid=conversation)
    # THEN he gets the message alone (the frontend redirects when it sees message_group_uuid)
    assert response.status_code == 200
    assert set(response.json) == MESSAGE_KEYS
    assert (response.json["handle"], response.json["message"]) == (bob["handle"], "hi alice")
    assert response.json["uuid"] not in {alice["uuid"], bob["uuid"], conversation}
    # AND both read it after the first one, oldest first
    for user in (alice, bob):
        assert [m["uuid"] for m in messages_of(client, user, conversation)][-1] == response.json["uuid"]
        assert [m["message"] for m in messages_of(client, user, conversation)] == ["hello bob", "hi alice"]


def test_append_accepts_the_group_id_in_any_case(client, bob, conversation):
    response = post(client, bob, message="upper", message_group_uuid=conversation.upper())
    assert response.status_code == 200
    assert messages_of(client, bob, conversation.upper())[-1]["message"] == "upper"


def test_non_member_can_neither_read_nor_post_and_nothing_is_written(client, alice, carol, conversation):
    # WHEN carol, who is not in the conversation, tries to read it and to post into it
    read = client.get(f"/api/messages/{conversation}", headers=carol["headers"])
    write = post(client, carol, message="let me in", message_group_uuid=conversation)
    # THEN both are 404 as if it did not exist
    assert (read.status_code, read.json) == (404, ["message_group_not_found"])
    assert (write.status_code, write.json) == (404, ["message_group_not_found"])
    # AND nothing was written
    assert [m["message"] for m in messages_of(client, alice, conversation)] == ["hello bob"]
    assert client.get("/api/message_groups", headers=carol["headers"]).json == []


def test_unknown_group_is_404_for_read_and_post(client, alice):
    group = str(uuid.uuid4())
    read = client.get(f"/api/messages/{group}", headers=alice["headers"])
    write = post(client, alice, message="hello?", message_group_uuid=group)
    assert (read.status_code, read.json) == (404, ["message_group_not_found"])
    assert (write.status_code, write.json) == (404, ["message_group_not_found"])


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize(("body", "codes"), [
    ({"message": "", "handle": "someone"}, ["message_blank"]),
    ({"message": "  \n\t ", "handle": "someone"}, ["message_blank"]),
    ({"handle": "someone"}, ["message_blank"]),
    ({"message": None, "handle": "someone"}, ["message_blank"]),
    ({"message": "x" * 1025, "handle": "someone"}, ["message_exceed_max_chars_1024"]),
    ({"message": "é" * 1025, "handle": "someone"}, ["message_exceed_max_chars_1024"]),
    ({"message": 42, "handle": "someone"}, ["message_invalid"]),
    ({"message": ["hi"], "handle": "someone"}, ["message_invalid"]),
    ({"message": "hi", "handle": ""}, ["user_reciever_handle_blank"]),
    ({"message": "hi", "handle": "   "}, ["user_reciever_handle_blank"]),
    ({"message": "hi"}, ["user_reciever_handle_blank"]),
    ({"message": "hi", "handle": {"x": 1}}, ["user_reciever_handle_invalid"]),
    ({"message": "", "handle": ""}, ["message_blank", "user_reciever_handle_blank"]),
    ({"message": "hi", "message_group_uuid": ""}, ["message_group_uuid_blank"]),
    ({"message": "hi", "message_group_uuid": None}, ["message_group_uuid_blank"]),
    ({"message": "hi", "message_group_uuid": "not-a-uuid"}, ["message_group_uuid_invalid"]),
    ({"message": "hi", "message_group_uuid": 12345}, ["message_group_uuid_invalid"]),
    ({"message": "hi", "message_group_uuid": "1" * 500}, ["message_group_uuid_invalid"]),
    ({"message": "", "message_group_uuid": ""}, ["message_blank", "message_group_uuid_blank"]),
    ({"message": "hi", "message_group_uuid": str(uuid.uuid4()), "handle": "someone"},
     ["handle_and_message_group_uuid_exclusive"]),
], ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_invalid_message_body_is_422_with_the_frontend_codes(client, alice, body, codes):
    response = post(client, alice, **body)
    assert response.status_code == 422
    assert response.json == codes
    assert client.get("/api/message_groups", headers=alice["headers"]).json == []


def test_message_of_exactly_1024_characters_is_accepted(client, alice, bob):
    response = post(client, alice, message="é" * 1024, handle=bob["handle"])
    assert response.status_code == 200
    assert response.json["message"] == "é" * 1024


def test_message_with_a_lone_surrogate_is_422_not_500(client, alice, bob):
    response = client.post("/api/messages", headers={**alice["headers"], "Content-Type": "application/json"},
                           data=f'{{"message": "bad \\ud800", "handle": "{bob["handle"]}"}}')
    assert response.status_code == 422
    assert response.json == ["message_invalid"]


@pytest.mark.parametrize("text", ["nul\x00byte", "bell\x07", "escape \x1b[31mred", "del\x7f", "c1\x85",
                                  "cr\rreturn", "abc\u202edcba", "\u202aembed", "\u202bx", "\u202cx", "\u202dx",
                                  "iso\u2066late", "\u2067x", "\u2068x", "\u2069x"],
                         ids=lambda t: t.encode("unicode_escape").decode())
def test_messages_with_control_or_bidi_characters_are_422_message_invalid(client, alice, bob, text):
    response = post(client, alice, message=text, handle=bob["handle"])
    assert (response.status_code, response.json) == (422, ["message_invalid"])
    assert client.get("/api/message_groups", headers=alice["headers"]).json == []


@pytest.mark.parametrize("text", ["\u200b", "\u200b \u200b", "\ufeff", "\u2060\n\t", "\u3164", "\u115f\u1160",
                                  "\u00a0\u2003", "\u180e"], ids=lambda t: t.encode("unicode_escape").decode())
def test_messages_of_invisible_characters_only_are_422_message_blank(client, alice, bob, text):
    response = post(client, alice, message=text, handle=bob["handle"])
    assert (response.status_code, response.json) == (422, ["message_blank"])


def test_newline_tab_and_visible_text_around_a_zero_width_space_are_kept(client, alice, bob):
    text = "line one\n\tline two \u200b\U0001F600"
    response = post(client, alice, message=text, handle=bob["handle"])
    assert response.status_code == 200, response.json
    assert messages_of(client, bob, response.json["message_group_uuid"])[0]["message"] == text


def test_the_1024_limit_counts_code_points_not_bytes_or_utf16_units(client, alice, bob):
    # An emoji is 4 bytes in UTF-8 and 2 units in UTF-16 (what JavaScript's length counts): still one.
    accepted = post(client, alice, message="\U0001F600" * 1024, handle=bob["handle"])
    refused = post(client, alice, message="\U0001F600" * 1025, handle=bob["handle"])
    assert accepted.status_code == 200, accepted.json
    assert (refused.status_code, refused.json) == (422, ["message_exceed_max_chars_1024"])


def test_json_nested_thousands_deep_is_400_invalid_json_without_a_traceback(client, alice, bob, caplog):
    depth = 30_000   # about 60 KB: under the body limit, far past Python's recursion limit
    body = '{"message": ' + "[" * depth + "]" * depth + f', "handle": "{bob["handle"]}"}}'
    with caplog.at_level(logging.WARNING):
        response = client.post("/api/messages", headers={**alice["headers"], "Content-Type": "application/json"},
                               data=body)
    assert (response.status_code, response.json) == (400, ["invalid_json"])
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(("data", "content_type"), [
    ("{not json", "application/json"),
    ('{"message": "hi", "handle": "x"', "application/json"),
    ('["message", "hi"]', "application/json"),
    ('"hi"', "application/json"),
    ("null", "application/json"),
    ("", "application/json"),
    ('{"message": "hi", "handle": "x"}', "text/plain"),
    ("message=hi&handle=x", "application/x-www-form-urlencoded"),
    (b"\xff\xfe{}", "application/json"),
])
def test_malformed_or_non_json_body_is_400_invalid_json(client, alice, data, content_type):
    response = client.post("/api/messages", headers={**alice["headers"], "Content-Type": content_type}, data=data)
    assert response.status_code == 400
    assert response.json == ["invalid_json"]


def test_huge_body_is_413_not_500(client, alice):
    response = post(client, alice, message="x" * 200_000, handle="someone")
    assert response.status_code == 413
    assert response.json == ["payload_too_large"]   # what backend_flask.server answers too


@pytest.mark.parametrize("group", ["not-a-uuid", "%20", "1234", "g" * 36])
def test_get_messages_of_a_non_uuid_group_is_422(client, alice, group):
    response = client.get(f"/api/messages/{group}", headers=alice["headers"])
    assert response.status_code == 422
    assert response.json in (["message_group_uuid_invalid"], ["message_group_uuid_blank"])


# ------------------------------------------------------------------ pagination

def test_messages_page_through_older_ones_with_the_link_header(client, alice, bob, conversation):
    # GIVEN a conversation of 5 messages
    for n in range(1, 5):
        sender = bob if n % 2 else alice
        assert post(client, sender, message=f"m{n}", message_group_uuid=conversation).status_code == 200
    # WHEN alice reads 2 at a time, following Link rel="next"
    pages, query = [], {"limit": "2"}
    while query is not None:
        response = client.get(f"/api/messages/{conversation}", headers=alice["headers"],
                              query_string={k: v for k, v in query.items() if k != "path"})
        assert response.status_code == 200
        assert isinstance(response.json, list)
        pages.append([m["message"] for m in response.json])
        query = next_link(response)
        if query:
            assert query["path"] == f"/api/messages/{conversation}"
            assert query["limit"] == "2"
    # THEN each page is oldest first, the newest page first, and the last page has no Link
    assert pages == [["m3", "m4"], ["m1", "m2"], ["hello bob"]]


def test_messages_default_page_is_20_newest_oldest_first(client, alice, bob, conversation):
    for n in range(1, 22):
        assert post(client, alice, message=f"m{n}", message_group_uuid=conversation).status_code == 200
    response = client.get(f"/api/messages/{conversation}", headers=bob["headers"])
    assert [m["message"] for m in response.json] == [f"m{n}" for n in range(2, 22)]
    assert next_link(response)["before"]


def test_message_groups_page_newest_activity_first(client, alice, make_user):
    # GIVEN alice started three conversations, one after the other
    others = [make_user() for _ in range(3)]
    for other in others:
        assert post(client, alice, message=f"to {other['handle']}", handle=other["handle"]).status_code == 200
    # WHEN she lists them two at a time
    first = client.get("/api/message_groups?limit=2", headers=alice["headers"])
    link = next_link(first)
    second = client.get("/api/message_groups", headers=alice["headers"],
                        query_string={"limit": link["limit"], "before": link["before"]})
    # THEN the newest come first and the second page ends the list
    assert [g["handle"] for g in first.json] == [others[2]["handle"], others[1]["handle"]]
    assert [g["handle"] for g in second.json] == [others[0]["handle"]]
    assert next_link(second) is None


def test_the_next_link_is_relative_whatever_host_the_request_names(client, alice, bob, carol, live_api):
    # GIVEN alice has two conversations, so her list of one has a next page
    post(client, alice, message="to bob", handle=bob["handle"])
    post(client, alice, message="to carol", handle=carol["handle"])
    spoofed = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example"}
    # WHEN the list is asked for under another host and port, with forwarding headers, in-process and over HTTP
    links = [client.get("/api/message_groups?limit=1", base_url="http://other.example:8443",
                        headers={**alice["headers"], **spoofed}).headers["Link"]]
    conn = http.client.HTTPConnection("127.0.0.1", live_api.port, timeout=15)
    try:
        conn.request("GET", "/api/message_groups?limit=1",
                     headers={**alice["headers"], **spoofed, "Host": "other.example:8443"})
        links.append(conn.getresponse().getheader("Link"))
    finally:
        conn.close()
    # THEN each link is a path on the host the client called: no scheme, no host, no port
    for link in links:
        target = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1)
        url = urlsplit(target)
        assert (url.scheme, url.netloc, url.path) == ("", "", "/api/message_groups"), link
        assert parse_qs(url.query)["limit"] == ["1"]


@pytest.mark.parametrize("limit", ["", "0", "-1", "101", "abc", "1.5", "9" * 30, "２", " 5"])
def test_out_of_range_or_malformed_limit_is_400(client, alice, limit):
    for path in ("/api/message_groups", f"/api/messages/{uuid.uuid4()}"):
        response = client.get(path, headers=alice["headers"], query_string={"limit": limit})
        assert response.status_code == 400
        assert response.json == ["invalid_limit"]


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "eyJ9", "e30", "x" * 2000,
                                    "eyJwayI6IkdSUCN4Iiwic2siOiJ4In0"])
def test_malformed_cursor_is_400_invalid_cursor(client, alice, bob, conversation, cursor):
    for path in ("/api/message_groups", f"/api/messages/{conversation}"):
        response = client.get(path, headers=alice["headers"], query_string={"before": cursor})
        assert response.status_code == 400, path
        assert response.json == ["invalid_cursor"]


def cursor_of(pk: str, sk: str) -> str:
    """A cursor in this API's format (base64url of the last key, unpadded)."""
    raw = json.dumps({"pk": pk, "sk": sk}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_whose_timestamp_has_a_trailing_newline_is_400(client, alice, bob, conversation):
    # GIVEN a cursor in this API's format, and the same one with a newline after its timestamp
    sk = "2026-11-22T08:03:06.045123+00:00"
    for path, pk in (("/api/message_groups", f"GRP#{alice['uuid']}"),
                     (f"/api/messages/{conversation}", f"MSG#{conversation}")):
        good = client.get(path, headers=alice["headers"], query_string={"before": cursor_of(pk, sk)})
        bad = client.get(path, headers=alice["headers"], query_string={"before": cursor_of(pk, sk + "\n")})
        # THEN the first pages, the second is refused as not a position of this API's
        assert good.status_code == 200, path
        assert (bad.status_code, bad.json) == (400, ["invalid_cursor"]), path


def test_cursor_of_another_list_is_refused(client, alice, bob, carol, conversation):
    # GIVEN a cursor issued for alice's conversation list
    post(client, alice, message="second convo", handle=carol["handle"])
    cursor = next_link(client.get("/api/message_groups?limit=1", headers=alice["headers"]))["before"]
    # WHEN bob replays it against his own list, or against a conversation
    mine = client.get("/api/message_groups", headers=bob["headers"], query_string={"before": cursor})
    other = client.get(f"/api/messages/{conversation}", headers=bob["headers"], query_string={"before": cursor})
    # THEN it is refused, not used to read alice's data
    assert (mine.status_code, mine.json) == (400, ["invalid_cursor"])
    assert (other.status_code, other.json) == (400, ["invalid_cursor"])


# ------------------------------------------------------------------ idempotency

def test_create_retried_with_the_same_idempotency_key_writes_once(client, alice, bob):
    key = str(uuid.uuid4())
    headers = {**alice["headers"], "Idempotency-Key": key}
    # WHEN the same create is sent twice with one key
    first = client.post("/api/messages", headers=headers, json={"message": "once", "handle": bob["handle"]})
    retry = client.post("/api/messages", headers=headers, json={"message": "once", "handle": bob["handle"]})
    # THEN the retry answers with the first result and the conversation holds one message
    assert first.status_code == retry.status_code == 200
    assert retry.data == first.data   # the same bytes: the same JSON, key order included
    assert len(messages_of(client, bob, first.json["message_group_uuid"])) == 1


def test_append_retried_with_the_same_client_message_id_writes_once(client, alice, bob, conversation):
    body = {"message": "only once", "message_group_uuid": conversation, "client_message_id": "c-1:retry.test_x"}
    first = post(client, bob, **body)
    retry = post(client, bob, **body)
    assert first.status_code == retry.status_code == 200
    assert retry.data == first.data   # the same bytes: the same JSON, key order included
    assert "message_group_uuid" not in retry.json
    assert [m["message"] for m in messages_of(client, alice, conversation)] == ["hello bob", "only once"]


def test_a_key_reused_for_another_message_is_409_and_writes_nothing(client, alice, bob, conversation):
    headers = {**bob["headers"], "Idempotency-Key": "reuse-" + uuid.uuid4().hex}
    assert client.post("/api/messages", headers=headers,
                       json={"message": "first", "message_group_uuid": conversation}).status_code == 200
    # WHEN the client reuses the key for a different message
    again = client.post("/api/messages", headers=headers,
                        json={"message": "second", "message_group_uuid": conversation})
    # THEN it is told so, and the second message was not silently swallowed as a replay
    assert again.status_code == 409 and again.json == ["idempotency_key_reused"]
    assert [m["message"] for m in messages_of(client, alice, conversation)] == ["hello bob", "first"]


def test_different_keys_write_twice(client, alice, bob, conversation):
    for key in ("k-1", "k-2"):
        assert client.post("/api/messages", headers={**bob["headers"], "Idempotency-Key": key},
                           json={"message": "same text", "message_group_uuid": conversation}).status_code == 200
    assert len(messages_of(client, alice, conversation)) == 3


def test_the_same_key_of_another_sender_is_not_their_first_result(client, alice, bob, conversation):
    # An idempotency key is scoped to its sender: bob cannot replay alice's result.
    key = "shared-key-" + uuid.uuid4().hex
    a = client.post("/api/messages", headers={**alice["headers"], "Idempotency-Key": key},
                    json={"message": "from alice", "message_group_uuid": conversation})
    b = client.post("/api/messages", headers={**bob["headers"], "Idempotency-Key": key},
                    json={"message": "from bob", "message_group_uuid": conversation})
    assert a.json["uuid"] != b.json["uuid"]
    assert b.json["handle"] == bob["handle"]


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "semi;colon", "ünï", "a\nb"])
def test_malformed_idempotency_key_is_400(client, alice, bob, key):
    response = post(client, alice, message="hi", handle=bob["handle"], client_message_id=key)
    assert (response.status_code, response.json) == (400, ["idempotency_key_invalid"])
    assert client.get("/api/message_groups", headers=alice["headers"]).json == []


def test_idempotency_key_of_the_wrong_type_is_400(client, alice, bob):
    for key in (12, ["a"], {"a": 1}, True):
        response = post(client, alice, message="hi", handle=bob["handle"], client_message_id=key)
        assert (response.status_code, response.json) == (400, ["idempotency_key_invalid"])


def test_header_and_body_keys_that_differ_are_400(client, alice, bob):
    response = client.post("/api/messages", headers={**alice["headers"], "Idempotency-Key": "a"},
                           json={"message": "hi", "handle": bob["handle"], "client_message_id": "b"})
    assert (response.status_code, response.json) == (400, ["idempotency_key_mismatch"])


# ------------------------------------------------------------------ nothing a client sends is a 500

def test_hostile_requests_never_get_a_500(client, alice, bob, conversation):
    bodies = [{}, {"message": {"$ne": 1}, "handle": bob["handle"]}, {"message": "hi", "handle": "a\x00b"},
              {"message": "hi", "handle": "x" * 5000}, {"message": "hi", "handle": "'; DROP TABLE users;--"},
              {"message": "hi\x00there", "handle": bob["handle"]}, {"message": "hi", "handle": ["a"]},
              {"message": "hi", "message_group_uuid": f"{{{conversation}}}"},
              {"message": "hi", "message_group_uuid": ["x"]}, {"message": True, "handle": True},
              {"message": "hi", "handle": bob["handle"], "client_message_id": None}]
    for body in bodies:
        assert post(client, alice, **body).status_code < 500, body
    paths = ["/api/messages/%00", "/api/messages/" + "a" * 5000, "/api/users/@/short", "/api/users/@%25/short",
             "/api/message_groups?limit=&before=", "/api/message_groups?before=%00", "/api/nothing",
             f"/api/messages/{conversation}?before=%FF%FE"]
    for path in paths:
        assert client.get(path, headers=alice["headers"]).status_code < 500, path
    assert client.delete("/api/messages", headers=alice["headers"]).status_code == 405
    assert client.put(f"/api/messages/{conversation}", headers=alice["headers"]).json == ["method_not_allowed"]


# ------------------------------------------------------------------ CORS

def test_cors_allows_the_frontend_origin_only(client, alice, config):
    allowed = client.get("/api/message_groups", headers={**alice["headers"], "Origin": config.frontend_url})
    assert allowed.headers["Access-Control-Allow-Origin"] == config.frontend_url
    assert "Link" in allowed.headers["Access-Control-Expose-Headers"]
    evil = client.get("/api/message_groups", headers={**alice["headers"], "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    # errors carry the header too, so the frontend can read their codes
    refused = client.get("/api/message_groups", headers={"Origin": config.frontend_url})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == config.frontend_url


def test_cors_preflight_allows_authorization_and_idempotency_key(client, config):
    response = client.options("/api/messages", headers={
        "Origin": config.frontend_url, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == config.frontend_url
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {h.strip() for h in allowed.split(",")}
    evil = client.options("/api/messages", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in evil.headers


# ------------------------------------------------------------------ DynamoDB down and back

def test_dynamodb_down_is_503_fast_and_recovers_without_restart(config, alice, bob, tmp_path):
    # GIVEN an app on a DynamoDB Local of its own, with a conversation in it
    port = local_services.free_port()
    own = local_services.start_dynamodb_local(port, None, tmp_path / "ddb1.log")
    messages = messages_table(config.replace(aws_endpoint_url=own.url))
    app = create_app(config.replace(aws_endpoint_url=own.url, ddb_timeout=1.0, ddb_max_attempts=2))
    client = app.test_client()
    replacement = None
    try:
        messages.create()
        assert post(client, alice, message="before", handle=bob["handle"]).status_code == 200
        # WHEN DynamoDB Local stops
        own.stop()
        # THEN reads and writes answer 503 within a few seconds
        for call in (lambda: client.get("/api/message_groups", headers=alice["headers"]),
                     lambda: post(client, alice, message="during", handle=bob["handle"])):
            started = time.monotonic()
            response = call()
            assert response.status_code == 503
            assert response.json == ["dynamodb_unavailable"]
            assert response.headers["Retry-After"]
            assert time.monotonic() - started < 5
        # WHEN a new DynamoDB Local comes up on the same port, without the table at first
        replacement = local_services.start_dynamodb_local(port, None, tmp_path / "ddb2.log")
        missing = client.get("/api/message_groups", headers=alice["headers"])
        assert (missing.status_code, missing.json) == (503, ["dynamodb_unavailable"])
        messages.create()
        # THEN the same app serves again
        assert post(client, alice, message="after", handle=bob["handle"]).status_code == 200
        groups = client.get("/api/message_groups", headers=alice["headers"])
        assert groups.status_code == 200
        assert [g["message"] for g in groups.json] == ["after"]
    finally:
        clients.close(app)
        own.stop()
        if replacement:
            replacement.stop()


def test_postgres_down_is_503_not_500(config, alice, bob):
    # GIVEN an app whose Postgres has nothing listening
    dead = config.replace(db_timeout=1.0, connection_url=f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/x")
    app = create_app(dead)
    try:
        client = app.test_client()
        started = time.monotonic()
        response = client.get("/api/message_groups", headers=alice["headers"])
        # THEN the user lookup answers 503, fast
        assert (response.status_code, response.json) == (503, ["database_unavailable"])
        assert time.monotonic() - started < 3
    finally:
        clients.close(app)
