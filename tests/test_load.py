"""Load: many concurrent senders through gunicorn; nothing lost, duplicated or reordered.

Quick sizes by default (50 senders x 20 messages over 10 conversations);
LOAD_SCALE=N multiplies the messages per sender for a longer run.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import Counter

import pytest

from backend_flask.config import Config

SENDERS = 50
MESSAGES_PER_SENDER = 20
CONVERSATIONS = 10


def _pages(live_api, token: str, group: str, limit: int = 37) -> list[dict]:
    """Read a whole conversation by following Link: rel=next; return it oldest first."""
    pages = []
    path = f"/api/messages/{group}?limit={limit}"
    while path:
        status, page, headers = live_api.request("GET", path, token=token)
        assert status == 200, (status, page)
        pages.append(page)
        link = headers.get("link")
        if not link:
            break
        url = link.split(";")[0].strip("<> ")
        parsed = urllib.parse.urlsplit(url)
        path = f"{parsed.path}?{parsed.query}"
    return [message for page in reversed(pages) for message in page]


@pytest.mark.timeout(240)
def test_concurrent_senders_store_every_message_once_in_order(live_api, make_user, stream_runner, config: Config):
    # GIVEN 10 conversations between 20 users, started through the API (pattern C)
    people = [make_user() for _ in range(2 * CONVERSATIONS)]
    pairs = list(zip(people[0::2], people[1::2], strict=True))
    groups = []
    for a, b in pairs:
        status, body, _ = live_api.request("POST", "/api/messages", token=a["token"],
                                           body={"handle": b["handle"], "message": "opening"})
        assert status == 200, body
        groups.append(body["message_group_uuid"])

    # WHEN 50 senders each post 20 messages at once, 5 senders per conversation, both sides talking
    statuses: Counter = Counter()
    sent: dict[str, list[str]] = {g: [] for g in groups}
    lock = threading.Lock()
    start = threading.Barrier(SENDERS)

    def sender(k: int) -> None:
        group_index = k % CONVERSATIONS
        user = pairs[group_index][(k // CONVERSATIONS) % 2]
        conn = http.client.HTTPConnection("127.0.0.1", live_api.port, timeout=30)
        start.wait()
        for i in range(MESSAGES_PER_SENDER):
            text = f"s{k}-m{i}"
            status, body, _ = live_api.request("POST", "/api/messages", token=user["token"], conn=conn,
                                               body={"message": text, "message_group_uuid": groups[group_index]})
            with lock:
                statuses[status] += 1
                if status == 200:
                    sent[groups[group_index]].append(text)
        conn.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)

    # THEN every request succeeded: no 5xx, nothing refused
    assert statuses == Counter({200: SENDERS * MESSAGES_PER_SENDER})

    for index, ((a, _b), group) in enumerate(zip(pairs, groups, strict=True)):
        # AND paging through the conversation returns each message exactly once, oldest first
        messages = _pages(live_api, a["token"], group)
        texts = [m["message"] for m in messages]
        assert texts[0] == "opening"
        assert Counter(texts[1:]) == Counter(sent[group])
        assert len(set(texts[1:])) == len(texts) - 1
        times = [m["created_at"] for m in messages]
        assert times == sorted(times) and len(set(times)) == len(times)
        # AND each sender's own messages are in the order they were sent
        for k in range(index, SENDERS, CONVERSATIONS):
            own = [t for t in texts if t.startswith(f"s{k}-")]
            assert own == [f"s{k}-m{i}" for i in range(MESSAGES_PER_SENDER)]

    # AND once the stream drains, both participants' lists end on the conversation's newest message
    deadline = time.monotonic() + 20
    while True:
        stale = []
        for (a, b), group in zip(pairs, groups, strict=True):
            status, latest, _ = live_api.request("GET", f"/api/messages/{group}?limit=1", token=a["token"])
            assert status == 200
            newest = latest[-1]["message"]
            for user in (a, b):
                status, listing, _ = live_api.request("GET", "/api/message_groups", token=user["token"])
                assert status == 200
                rows = [row for row in listing if row["uuid"] == group]
                assert len(rows) == 1, rows
                if rows[0]["message"] != newest:
                    stale.append((user["handle"], rows[0]["message"], newest))
        if not stale or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stale == []
