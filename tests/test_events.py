"""GET /api/events and POST /api/events/ticket: delivery, membership, tickets, resume, fan-out, expiry.

Every test runs the real server (backend_flask.server, two workers) against the
session's services and reads the stream over a socket. No assertion depends on
how fast anything happens: a test waits for an event that must come (bounded,
generously), and proves that something does NOT come by waiting for a later
event that must come after it on the same channel.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import psycopg
import pytest

from backend_flask.config import Config
from backend_flask.lib import ddb
from backend_flask.services.events import Cursor, micros
from tests.conftest import serve_api
from toolbox.sse import EventStream, StreamClosed

WAIT = 30.0   # seconds an event that must come may take on a busy machine


def post(api, user: dict, **body) -> dict:
    status, data, _ = api.request("POST", "/api/messages", token=user["token"], body=body)
    assert status == 200, data
    return data


def messages_of(events) -> list[dict]:
    return [e.json() for e in events if e.event == "message"]


def until_message(text: str):
    return lambda seen: any(e.event == "message" and e.json()["message"] == text for e in seen)


def open_stream(api, user: dict, **kwargs) -> EventStream:
    stream = EventStream(api.port, token=user["token"], timeout=WAIT, **kwargs)
    assert stream.status == 200, stream.body
    assert stream.headers["content-type"].startswith("text/event-stream")
    return stream


@pytest.fixture(scope="module")
def api(config: Config, tmp_path_factory):
    """The server with two workers and a one-second heartbeat."""
    running = serve_api(config.replace(events_heartbeat=1.0), tmp_path_factory.mktemp("events") / "api.log")
    yield running
    running.service.stop()


def test_a_message_reaches_the_receiver_and_the_senders_other_tab_with_their_rows(api, make_user):
    # GIVEN two people, the receiver's stream and a second tab of the sender
    a, b = make_user(), make_user()
    with open_stream(api, b) as to_b, open_stream(api, a) as other_tab:
        # WHEN a starts a conversation with b through the API
        sent = post(api, a, handle=b["handle"], message="hello, b")
        # THEN both streams get the message with its conversation, and each their own conversation row
        for stream, other in ((to_b, a), (other_tab, b)):
            seen = stream.collect(lambda s: {e.event for e in s} >= {"message", "message_group"}, WAIT,
                                  kinds={"message", "message_group"})
            (message,) = messages_of(seen)
            assert message == {"message_group_uuid": sent["message_group_uuid"], "uuid": sent["uuid"],
                               "display_name": a["display_name"], "handle": a["handle"], "message": "hello, b",
                               "created_at": sent["created_at"]}
            (row,) = [e.json() for e in seen if e.event == "message_group"]
            receiving = stream is to_b
            assert row == {"uuid": sent["message_group_uuid"], "display_name": other["display_name"],
                           "handle": other["handle"], "message": "hello, b", "created_at": sent["created_at"],
                           "unread_count": 1 if receiving else 0,
                           "peer_last_read_at": sent["created_at"] if receiving else None}
            assert all(e.id for e in seen)


def test_the_row_in_a_message_group_event_is_what_the_list_then_shows(api, make_user, stream_runner):
    # GIVEN a conversation and the receiver's stream
    a, b = make_user(), make_user()
    group = post(api, a, handle=b["handle"], message="first")["message_group_uuid"]
    with open_stream(api, b) as stream:
        # WHEN a appends
        post(api, a, message_group_uuid=group, message="second")
        (row,) = [e.json() for e in stream.collect(lambda s: len(s) == 1, WAIT, kinds={"message_group"})]
    # THEN once pattern E has moved the rows, GET /api/message_groups shows exactly that row
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        _, listing, _ = api.request("GET", "/api/message_groups", token=b["token"])
        if listing and listing[0]["message"] == "second":
            break
        time.sleep(0.2)
    assert listing[0] == row


def test_an_outsider_never_receives_a_conversation_they_are_not_in(api, make_user):
    # GIVEN a, b and an outsider c with a stream open
    a, b, c = make_user(), make_user(), make_user()
    with open_stream(api, c) as outsider:
        # WHEN a writes to b, and only then to c
        private = post(api, a, handle=b["handle"], message="just for b")
        to_c = post(api, a, handle=c["handle"], message="for c")
        # THEN c's stream carries c's conversation, and nothing published before it of a and b's
        seen = outsider.collect(until_message("for c"), WAIT)
    groups = {e.json().get("message_group_uuid") or e.json().get("uuid") for e in seen}
    assert groups == {to_c["message_group_uuid"]}
    assert private["message_group_uuid"] not in str([e.data for e in seen])


def test_a_ticket_opens_the_stream_once(api, make_user):
    # GIVEN a ticket
    a, b = make_user(), make_user()
    status, ticket, _ = api.request("POST", "/api/events/ticket", token=b["token"])
    assert status == 200 and set(ticket) == {"ticket", "expires_at"}
    assert 0 < datetime.fromisoformat(ticket["expires_at"]).timestamp() - time.time() <= 31
    # WHEN a browser opens the stream with it (no Authorization header)
    with EventStream(api.port, ticket=ticket["ticket"], timeout=WAIT) as stream:
        assert stream.status == 200
        post(api, a, handle=b["handle"], message="via ticket")
        # THEN it is b's stream
        assert messages_of(stream.collect(until_message("via ticket"), WAIT))
        # AND the same ticket does not open a second one
        again = EventStream(api.port, ticket=ticket["ticket"], timeout=WAIT)
        assert (again.status, again.body.strip()) == (401, b'["ticket_invalid"]')


@pytest.mark.parametrize("ticket", ["", "x" * 500, "not-a-ticket", "%00"])
def test_a_ticket_that_was_never_issued_is_refused(api, ticket):
    stream = EventStream(api.port, ticket=ticket, timeout=WAIT)
    assert stream.status == 401
    assert stream.body.strip() in (b'["ticket_invalid"]', b'["bad_request"]')


def test_an_expired_ticket_is_refused(api, make_user, messages: ddb.MessagesTable):
    # GIVEN a ticket valid for a fifth of a second, issued as the route issues them
    b = make_user()
    issued = messages.issue_ticket(b, token_expires_at=int(time.time()) + 3600, valid_seconds=0.2)
    expires = datetime.fromisoformat(issued["expires_at"]).timestamp()
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    # WHEN it is used after that
    stream = EventStream(api.port, ticket=issued["ticket"], timeout=WAIT)
    # THEN it is refused, like any used ticket
    assert (stream.status, stream.body.strip()) == (401, b'["ticket_invalid"]')


def test_the_stream_needs_a_token_or_a_ticket_and_tickets_need_a_token(api, foreign_signing_key, forge, make_user):
    assert EventStream(api.port, timeout=WAIT).status == 401
    forged = forge(sub=make_user()["sub"], key=foreign_signing_key)
    assert EventStream(api.port, token=forged, timeout=WAIT).status == 401
    assert api.request("POST", "/api/events/ticket")[0] == 401


def test_a_token_that_expires_during_the_stream_ends_it_with_token_expired(api, make_user, forge):
    # GIVEN a token that expires in two seconds (still accepted: the verifier allows 5 s of clock skew)
    b = make_user()
    token = forge(sub=b["sub"], exp=int(time.time()) + 2)
    with EventStream(api.port, token=token, timeout=WAIT) as stream:
        assert stream.status == 200
        # WHEN it expires
        seen = stream.collect(lambda s: bool(s), WAIT, kinds={"token_expired"})
        # THEN the stream says so and ends
        assert [e.event for e in seen] == ["token_expired"]
        with pytest.raises(StreamClosed):
            stream.next(WAIT)


def test_a_heartbeat_comment_comes_while_nothing_happens(api, make_user):
    with open_stream(api, make_user()) as stream:
        deadline = time.monotonic() + WAIT
        while stream.parser.comments < 2 and time.monotonic() < deadline:
            stream.next(0.5)
        assert stream.parser.comments >= 2


def test_resume_after_a_restart_replays_exactly_the_missed_events(config: Config, make_user, stream_runner,
                                                                   tmp_path):
    # GIVEN a server, b's stream on it, and three messages b received
    a, b = make_user(), make_user()
    first = serve_api(config, tmp_path / "first.log")
    try:
        group = post(first, a, handle=b["handle"], message="m1")["message_group_uuid"]
        stream = open_stream(first, b)
        for text in ("m2", "m3"):
            post(first, a, message_group_uuid=group, message=text)
        received = stream.collect(until_message("m3"), WAIT)
        assert [m["message"] for m in messages_of(received)] == ["m2", "m3"]
        last_id = stream.last_id
    finally:
        # WHEN the server stops (the stream ends with it) ...
        first.service.stop()
    with pytest.raises((StreamClosed, OSError)):
        stream.collect(lambda s: False, WAIT)
    stream.close()
    # ... and a new one starts, through which a writes three more, to b and to a new conversation
    second = serve_api(config, tmp_path / "second.log")
    try:
        c = make_user()
        missed = [post(second, a, message_group_uuid=group, message=t) for t in ("m4", "m5")]
        missed.append(post(second, c, handle=b["handle"], message="m6 from c"))
        # THEN resuming with the last id replays exactly m4, m5, m6, once each, and each changed row once
        with open_stream(second, b, last_event_id=last_id) as resumed:
            replayed = resumed.collect(lambda s: any(e.event == "message_group" and e.json()["message"] == "m6 from c"
                                                     for e in s), WAIT)
            assert [m["uuid"] for m in messages_of(replayed)] == [m["uuid"] for m in missed]
            rows = [e.json() for e in replayed if e.event == "message_group"]
            assert sorted((r["uuid"], r["message"]) for r in rows) == sorted(
                [(group, "m5"), (missed[2]["message_group_uuid"], "m6 from c")])
            # AND live events follow, none of the replayed ones again
            post(second, a, message_group_uuid=group, message="m7")
            after = resumed.collect(until_message("m7"), WAIT)
            assert [m["message"] for m in messages_of(after)] == ["m7"]
            assert len({e.id for e in replayed + after}) == len(replayed + after)
    finally:
        second.service.stop()


def test_resuming_twice_from_the_same_id_replays_the_same_events(api, make_user):
    # GIVEN an id taken before two messages
    a, b = make_user(), make_user()
    group = post(api, a, handle=b["handle"], message="before")["message_group_uuid"]
    with open_stream(api, b) as stream:
        last_id = stream.last_id
    texts = ["after 1", "after 2"]
    for text in texts:
        post(api, a, message_group_uuid=group, message=text)
    # WHEN two clients resume from it
    replays = []
    for _ in range(2):
        with open_stream(api, b, last_event_id=last_id) as resumed:
            replays.append(messages_of(resumed.collect(until_message("after 2"), WAIT)))
    # THEN both get exactly the two messages
    assert [[m["message"] for m in r] for r in replays] == [texts, texts]


def test_an_id_that_is_not_ours_too_old_or_from_the_future_answers_reset(api, make_user):
    b = make_user()
    too_old = Cursor(micros("2020-01-01T00:00:00.000000+00:00")).encode()
    from_the_future = Cursor(micros("2100-01-01T00:00:00.000000+00:00")).encode()
    for last_id in ("garbage", too_old, from_the_future, "1." + "f" * 14 + ".zz"):
        with open_stream(api, b, last_event_id=last_id) as stream:
            (reset,) = stream.collect(lambda s: bool(s), WAIT, kinds={"reset"})
            assert reset.id and Cursor.decode(reset.id) is not None


def test_two_processes_a_stream_on_one_gets_what_is_posted_through_the_other(config: Config, api, make_user,
                                                                             tmp_path):
    # GIVEN a second API process beside the module's, and b's stream on the module's
    a, b = make_user(), make_user()
    other = serve_api(config, tmp_path / "other.log")
    try:
        with open_stream(api, b) as stream:
            # WHEN a posts through the other process
            post(other, a, handle=b["handle"], message="across processes")
            # THEN b's stream has it
            assert messages_of(stream.collect(until_message("across processes"), WAIT))
    finally:
        other.service.stop()


def test_a_message_too_big_for_a_notify_arrives_whole(api, make_user):
    # GIVEN the largest message there is: 1024 four-byte characters (three copies exceed NOTIFY's 8000 bytes)
    a, b = make_user(), make_user()
    text = "\U0001f600" * 1024
    with open_stream(api, b) as stream:
        post(api, a, handle=b["handle"], message=text)
        seen = stream.collect(lambda s: len(s) == 2, WAIT, kinds={"message", "message_group"})
    assert {e.event: e.json()["message"] for e in seen} == {"message": text, "message_group": text}


def test_streams_replay_what_was_published_while_their_process_was_not_listening(api, make_user, pg_url):
    # GIVEN b's stream, and the LISTEN connections of the server's workers cut off
    a, b = make_user(), make_user()
    group = post(api, a, handle=b["handle"], message="before the cut")["message_group_uuid"]
    with open_stream(api, b) as stream:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            cut = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name = 'cruddur-events'").fetchall()
        assert cut
        # WHEN messages are posted at once, while the workers reconnect
        texts = [f"during {n}" for n in range(3)]
        for text in texts:
            post(api, a, message_group_uuid=group, message=text)
        # THEN the stream has each exactly once: live, or replayed after the reconnection
        seen = stream.collect(until_message(texts[-1]), WAIT, kinds={"message"})
        later = f"after {uuid.uuid4().hex[:6]}"
        post(api, a, message_group_uuid=group, message=later)
        seen += stream.collect(until_message(later), WAIT, kinds={"message"})
    assert [m["message"] for m in messages_of(seen)] == [*texts, later]


def _old_message(messages: ddb.MessagesTable, group: str, sender: dict, text: str) -> str:
    """Put a message an hour old into a conversation (as if read only now); return its created_at."""
    sk = ddb.to_iso(datetime.fromtimestamp(time.time() - 3600).astimezone())
    messages.client.put_item(TableName=messages.name, Item=ddb.to_item(
        ddb.message_item(group, sk, str(uuid.uuid4()), {k: sender[k] for k in ("uuid", "handle", "display_name")},
                         text)))
    return sk


def test_reading_an_old_message_reaches_the_other_member_at_once(api, make_user, messages):
    # GIVEN a conversation holding a message an hour old, and a's stream
    a, b = make_user(), make_user()
    group = post(api, a, handle=b["handle"], message="hi")["message_group_uuid"]
    old = _old_message(messages, group, a, "from an hour ago")
    with open_stream(api, a) as stream:
        # WHEN b marks the conversation read up to that old message
        status, _, _ = api.request("POST", f"/api/message_groups/{group}/read", token=b["token"],
                                   body={"created_at": old})
        assert status == 200
        # THEN a is told, although the marker is an hour old
        (read,) = stream.collect(lambda s: bool(s), WAIT, kinds={"read"})
        assert read.json() == {"message_group_uuid": group, "handle": b["handle"], "last_read_at": old}


def test_a_read_missed_while_away_is_replayed_once(api, make_user, messages):
    # GIVEN a's id from before b reads an old message
    a, b = make_user(), make_user()
    group = post(api, a, handle=b["handle"], message="hi")["message_group_uuid"]
    old = _old_message(messages, group, a, "from an hour ago")
    with open_stream(api, a) as stream:
        away = stream.last_id
    status, _, _ = api.request("POST", f"/api/message_groups/{group}/read", token=b["token"], body={"created_at": old})
    assert status == 200
    # WHEN a resumes, THEN the read comes once; resuming after it, it does not come again
    later = f"later {uuid.uuid4().hex[:6]}"
    with open_stream(api, a, last_event_id=away) as resumed:
        reads = [e for e in resumed.collect(lambda s: any(e.event == "read" for e in s), WAIT) if e.event == "read"]
        assert [r.json()["last_read_at"] for r in reads] == [old]
        after = resumed.last_id
    post(api, b, message_group_uuid=group, message=later)
    with open_stream(api, a, last_event_id=after) as again:
        seen = again.collect(until_message(later), WAIT)
    assert [e.event for e in seen if e.event == "read"] == []
