"""Faults under load: a backing service stops and comes back while clients keep sending.

Each test runs its own DynamoDB Local or Postgres (persistent data, fixed
port) so it can stop and restart it without touching the session's services.
Load is bounded in count and time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter

import pytest

from backend_flask.config import Config
from backend_flask.lib import ddb
from tests.conftest import TEST_PASSWORD, serve_api
from toolbox import local_services, pg
from toolbox import users as tusers
from toolbox.settings import messages_table

OUTAGE_SECONDS = 2.0
QUICK_FAILURE_SECONDS = 5.0   # a 503 must come within this
NO_HANG_SECONDS = 8.0         # no request may take longer than this


class Load:
    """Clients that keep calling until stopped, recording (status, seconds) of every call."""

    def __init__(self, live_api, calls, clients: int = 6, max_seconds: float = 40.0):
        self.live_api = live_api
        self.calls = calls
        self.results: list[tuple[float, int, float, str]] = []  # (started, status, seconds, kind)
        self.acked: list[dict] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.live_api.port, timeout=NO_HANG_SECONDS + 5)
        n = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            kind, method, path, token, body = self.calls(index, n)
            n += 1
            started = time.monotonic()
            try:
                status, data, _ = self.live_api.request(method, path, token=token, body=body, conn=conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.live_api.port, timeout=NO_HANG_SECONDS + 5)
                status, data = 599, None
            elapsed = time.monotonic() - started
            with self._lock:
                self.results.append((started, status, elapsed, kind))
                if status == 200 and method == "POST":
                    self.acked.append(data)
            time.sleep(0.01)
        conn.close()

    def statuses(self) -> Counter:
        return Counter(status for _, status, _, _ in self.results)


def _wait_healthy(live_api, seconds: float = 30.0) -> float:
    """Wait until health answers 200; return when that was (monotonic)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _, _ = live_api.request("GET", "/api/health")
        if status == 200:
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError("API did not recover")


def _assert_served_after(load: Load, recovered: float) -> None:
    """Every request started once health was back was served (requests already waiting may still fail)."""
    after = [status for started, status, _, _ in load.results if started >= recovered]
    assert after and set(after) == {200}, after


def _assert_behaved(load: Load) -> None:
    statuses = load.statuses()
    assert set(statuses) <= {200, 503}, statuses            # never a 500, never a dropped connection
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # the outage was seen, and so was service
    slow_503 = [r for r in load.results if r[1] == 503 and r[2] > QUICK_FAILURE_SECONDS]
    assert slow_503 == []
    assert max(r[2] for r in load.results) < NO_HANG_SECONDS


def _assert_nothing_half_written(client, table: str, acked: list[dict], groups: list[str]) -> None:
    """Every acknowledged message is stored once; every conversation row points at a stored message."""
    messages = ddb.MessagesTable(client, table)
    items = list(messages.scan())
    messages = [i for i in items if i["pk"].startswith(ddb.MESSAGE_PREFIX)]
    uuids = Counter(m["message_uuid"] for m in messages)
    for answer in acked:
        assert uuids[answer["uuid"]] == 1, answer
    assert all(count == 1 for count in uuids.values())
    by_group_time = {(m["pk"][len(ddb.MESSAGE_PREFIX):], m["sk"]): m["message"] for m in messages}
    rows = [i for i in items if i["pk"].startswith(ddb.GROUP_PREFIX) and i["message_group_uuid"] in groups]
    assert len(rows) == 2 * len(groups)
    for row in rows:
        assert by_group_time.get((row["message_group_uuid"], row.get("last_message_at", row["sk"]))) == row["message"]


@pytest.mark.timeout(180)
def test_dynamodb_stopped_under_load_gives_quick_503s_and_recovers(config: Config, make_user, tmp_path):
    # GIVEN an API on a DynamoDB Local of its own, with data on disk, and some conversations
    port = local_services.free_port()
    data = tmp_path / "ddb-data"
    dynamodb = local_services.start_dynamodb_local(port, data, tmp_path / "ddb.log")
    own = config.replace(aws_endpoint_url=dynamodb.url)
    messages = messages_table(own)
    client = messages.client
    messages.create()
    api = serve_api(own, tmp_path / "api.log")
    try:
        people = [make_user() for _ in range(4)]
        groups = []
        for a, b in zip(people[0::2], people[1::2], strict=True):
            status, body, _ = api.request("POST", "/api/messages", token=a["token"],
                                          body={"handle": b["handle"], "message": "before"})
            assert status == 200
            groups.append(body["message_group_uuid"])

        def calls(index: int, n: int):
            user, group = people[index % 4], groups[(index % 4) // 2]
            if n % 2:
                return "read", "GET", "/api/message_groups", user["token"], None
            return "write", "POST", "/api/messages", user["token"], {"message": f"c{index} n{n}",
                                                                      "message_group_uuid": group}

        # WHEN DynamoDB Local stops in the middle of the load and comes back
        with Load(api, calls) as load:
            time.sleep(1.0)
            dynamodb.stop()
            time.sleep(OUTAGE_SECONDS)
            dynamodb = local_services.start_dynamodb_local(port, data, tmp_path / "ddb.log")
            recovered = _wait_healthy(api)
            time.sleep(1.0)

        # THEN clients got 200s or quick 503s, never a 500 or a hang, and service came back
        _assert_behaved(load)
        _assert_served_after(load, recovered)
        # AND nothing was half-written: every acknowledged message is there once, rows match messages
        _assert_nothing_half_written(client, own.ddb_message_table, load.acked, groups)
    finally:
        api.service.stop()
        dynamodb.stop()


@pytest.mark.timeout(180)
def test_postgres_stopped_under_load_gives_quick_503s_and_recovers(config: Config, idp, tmp_path):
    # GIVEN an API on a Postgres of its own (data on disk), users in it, and the session's DynamoDB
    port = local_services.free_port()
    postgres = local_services.start_postgres(tmp_path / "pg", port, database="faults", throwaway=True)
    url = f"postgresql://postgres@127.0.0.1:{port}/faults"
    pg.load_schema(url)
    people = []
    for i in range(4):
        handle = f"pgfault{i}{time.monotonic_ns() % 10**8}"
        people.append(tusers.create_signed_up_user(url, idp, config.cognito_user_pool_id, config.cognito_client_id,
                                                  handle=handle, display_name=handle,
                                                  email=f"{handle}@example.test", password=TEST_PASSWORD))
    # A short cache, so reads need Postgres during the outage too.
    own = config.replace(connection_url=url, user_cache_ttl=0.5)
    api = serve_api(own, tmp_path / "api.log")
    try:
        def calls(index: int, n: int):
            user, other = people[index % 4], people[(index + 1) % 4]
            if n % 2:
                return "read", "GET", "/api/message_groups", user["token"], None
            # Starting a conversation by handle looks both users up in Postgres.
            return "write", "POST", "/api/messages", user["token"], {"handle": other["handle"],
                                                                      "message": f"c{index} n{n}"}

        # WHEN Postgres stops in the middle of the load and comes back on the same data
        with Load(api, calls) as load:
            time.sleep(1.0)
            postgres.stop()
            # Requests wait up to DB_TIMEOUT for a connection (a shorter outage is ridden out
            # without errors): stay down longer than that so clients see 503s.
            time.sleep(own.db_timeout + OUTAGE_SECONDS)
            postgres = local_services.start_postgres(tmp_path / "pg", port, database="faults", throwaway=True)
            recovered = _wait_healthy(api)
            time.sleep(1.5)

        # THEN clients got 200s or quick 503s, never a 500 or a hang, and service came back
        _assert_behaved(load)
        _assert_served_after(load, recovered)
    finally:
        api.service.stop()
        postgres.stop()
