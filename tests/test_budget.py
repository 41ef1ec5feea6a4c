"""A per-request time budget: a hung backend costs a request its budget, then a 503 (issue 11, items 4 and 5).

"Hung" is a real network fault: a FaultProxy in front of the session's
DynamoDB Local or Postgres accepts connections and then forwards nothing, as
a frozen process or a black-holed host does. The apps here are given long
timeouts (5 s per DynamoDB attempt, 3 attempts; 5 s for Postgres), so only
the budget can explain a quick answer. The bounds the tests assert are far
above the budget (CPU load must not fail them) and far below the timeouts.
Run with -s to see the measured times.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from backend_flask import clients
from backend_flask.app import create_app
from backend_flask.config import Config
from backend_flask.lib import budget
from backend_flask.lib.aws import make_client
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.errors import DatabaseUnavailable, DynamoDBUnavailable
from tests.conftest import serve_api
from tests.helpers import concurrently
from toolbox.fault_proxy import FaultProxy

BUDGET = 1.2
HEALTH_BUDGET = 0.3
SLOW_TIMEOUT = 5.0         # what a hung backend would cost per attempt without the budget
WITHIN_BUDGET = 3.0        # a 503 comes well before one attempt's timeout (budget + room for a busy CPU)
HEALTH_WITHIN = 1.5
DESCRIBE = b"DynamoDB_20120810.DescribeTable"


@pytest.fixture
def ddb_proxy(config) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's DynamoDB Local."""
    with FaultProxy(int(config.aws_endpoint_url.rsplit(":", 1)[1])) as proxy:
        yield proxy


@pytest.fixture
def pg_proxy(pg_url) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's Postgres."""
    with FaultProxy(int(psycopg.conninfo.conninfo_to_dict(pg_url)["port"])) as proxy:
        yield proxy


@pytest.fixture
def hung_config(config, pg_url, ddb_proxy, pg_proxy) -> Config:
    """Settings that reach both backends through the proxies, with long timeouts and the default budget."""
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    info.update(host="127.0.0.1", port=str(pg_proxy.port))
    return config.replace(aws_endpoint_url=ddb_proxy.url, connection_url=psycopg.conninfo.make_conninfo(**info),
                          ddb_timeout=SLOW_TIMEOUT, ddb_max_attempts=3, db_timeout=SLOW_TIMEOUT,
                          request_budget=BUDGET, health_budget=HEALTH_BUDGET, health_cache_ttl=0.0)


@pytest.fixture
def hung_app(hung_config):
    app = create_app(hung_config)
    yield app
    clients.close(app)


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def report(what: str, status: int, seconds: float) -> None:
    print(f"\n  {what}: {status} in {seconds * 1000:.0f} ms", end="")


# ------------------------------------------------------------------ the budget itself

def test_a_budget_is_what_is_left_and_never_grows_when_nested():
    assert budget.remaining() is None and budget.bound(7.0) == 7.0
    with budget.within(1.0):
        assert 0.5 < budget.remaining() <= 1.0
        assert budget.bound(0.25) == 0.25 and budget.bound(7.0) <= 1.0
        with budget.within(60.0):
            assert budget.remaining() <= 1.0
    assert budget.remaining() is None


def test_a_budget_is_per_thread():
    seen = []
    with budget.within(1.0):
        thread = threading.Thread(target=lambda: seen.append(budget.remaining()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_a_dynamodb_call_inside_a_budget_gives_up_when_it_is_spent(ddb_proxy, config):
    # GIVEN a client with 5 s attempts, three of them, and a DynamoDB that hangs
    table = MessagesTable(make_client("dynamodb", region=config.aws_region, endpoint_url=ddb_proxy.url,
                                      timeout=SLOW_TIMEOUT, max_attempts=3), config.ddb_message_table)
    table.ping()
    ddb_proxy.hang()
    # WHEN it is called within a budget of half a second
    with budget.within(0.5):
        started = time.monotonic()
        with pytest.raises(DynamoDBUnavailable):
            table.ping()
        elapsed = time.monotonic() - started
    # THEN it gave up with the budget, not after its timeouts
    report("DescribeTable, DynamoDB hung, 0.5 s budget", 503, elapsed)
    assert elapsed < 2.5
    # AND a call whose budget is already spent is not even sent
    sent = ddb_proxy.count(DESCRIBE)
    with budget.within(0.0), pytest.raises(DynamoDBUnavailable):
        table.ping()
    assert ddb_proxy.count(DESCRIBE) == sent


def test_a_retry_whose_backoff_would_outlast_the_budget_is_not_made(ddb_proxy, config):
    # GIVEN a DynamoDB endpoint that throttles, asking for a retry after 2 s (botocore would wait that long)
    table = MessagesTable(make_client("dynamodb", region=config.aws_region, endpoint_url=ddb_proxy.url,
                                      timeout=SLOW_TIMEOUT, max_attempts=3), config.ddb_message_table)
    body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}'
    ddb_proxy.answer(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/x-amz-json-1.0\r\n"
                     b"x-amz-retry-after: 2000\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
    # WHEN it is called within a budget of half a second
    with budget.within(0.5):
        (error, elapsed) = timed(lambda: pytest.raises(DynamoDBUnavailable, table.ping))
    # THEN it gave up at once with the throttling error, instead of sleeping past the budget to retry
    report("DescribeTable, throttled (retry after 2 s), 0.5 s budget", 503, elapsed)
    assert "ThrottlingException" in str(error.value.__cause__)
    assert elapsed < 1.5


def test_a_postgres_query_inside_a_budget_gives_up_when_it_is_spent(hung_app, pg_proxy):
    # GIVEN the app's pool (5 s timeouts) with a connection open, and then a Postgres that hangs
    db = hung_app.extensions["cruddur"].db
    assert db.query_value("users/count") is not None
    pg_proxy.hang()
    # WHEN a query runs within a budget of half a second
    with budget.within(0.5):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            db.query_value("users/count")
        elapsed = time.monotonic() - started
    # THEN it gave up with the budget, not after the pool's 5 s
    report("SELECT, Postgres hung, 0.5 s budget", 503, elapsed)
    assert elapsed < 2.5
    # AND once Postgres answers again, the same pool serves
    pg_proxy.resume()
    assert db.query_value("users/count") is not None


# ------------------------------------------------------------------ the API in-process (threads)

def test_with_dynamodb_hung_requests_that_need_it_are_503_within_the_budget_and_others_stay_fast(
        hung_app, ddb_proxy, alice, bob):
    client = hung_app.test_client()
    started = client.post("/api/messages", headers=alice["headers"], json={"message": "hi", "handle": bob["handle"]})
    assert started.status_code == 200, started.json
    group = started.json["message_group_uuid"]
    # GIVEN DynamoDB hangs
    ddb_proxy.hang()
    # WHEN requests that need it come in
    calls = {
        "GET /api/message_groups": lambda: client.get("/api/message_groups", headers=alice["headers"]),
        "GET /api/messages/<group>": lambda: client.get(f"/api/messages/{group}", headers=alice["headers"]),
        "POST /api/messages (append)": lambda: client.post("/api/messages", headers=bob["headers"],
                                                           json={"message": "yo", "message_group_uuid": group}),
    }
    for what, call in calls.items():
        response, elapsed = timed(call)
        report(f"{what}, DynamoDB hung", response.status_code, elapsed)
        # THEN each is a 503 with Retry-After within the budget, not after 3 x 5 s
        assert (response.status_code, response.json) == (503, ["dynamodb_unavailable"])
        assert response.headers["Retry-After"]
        assert elapsed < WITHIN_BUDGET
    # AND health names DynamoDB at once, while Postgres is reported fine
    health, elapsed = timed(lambda: client.get("/api/health"))
    report("GET /api/health, DynamoDB hung", health.status_code, elapsed)
    assert (health.status_code, health.json["dynamodb"], health.json["postgres"]) == (503, "dynamodb_unavailable",
                                                                                       "ok")
    assert health.headers["Retry-After"] and elapsed < HEALTH_WITHIN
    # AND a request that needs only Postgres does not wait at all
    short, elapsed = timed(lambda: client.get(f"/api/users/@{bob['handle']}/short", headers=alice["headers"]))
    report("GET /api/users/@handle/short, DynamoDB hung", short.status_code, elapsed)
    assert short.status_code == 200 and elapsed < BUDGET
    # AND once DynamoDB answers again, so does the same app
    ddb_proxy.resume()
    assert client.get(f"/api/messages/{group}", headers=alice["headers"]).status_code == 200


def test_with_postgres_hung_requests_that_need_it_are_503_within_the_budget_and_others_stay_fast(
        hung_app, pg_proxy, alice, bob, make_user):
    client = hung_app.test_client()
    # GIVEN alice's user is cached by the app (a request of hers was served), and then Postgres hangs
    assert client.get("/api/message_groups", headers=alice["headers"]).status_code == 200
    stranger = make_user()
    pg_proxy.hang()
    # WHEN a request needs Postgres (a handle lookup; a user the app has not seen yet)
    for what, call in {
        "GET /api/users/@handle/short": lambda: client.get(f"/api/users/@{bob['handle']}/short",
                                                            headers=alice["headers"]),
        "GET /api/message_groups, user not cached": lambda: client.get("/api/message_groups",
                                                                        headers=stranger["headers"]),
    }.items():
        response, elapsed = timed(call)
        report(f"{what}, Postgres hung", response.status_code, elapsed)
        # THEN it is a 503 with Retry-After within the budget
        assert (response.status_code, response.json) == (503, ["database_unavailable"])
        assert response.headers["Retry-After"] and elapsed < WITHIN_BUDGET
    # AND health names Postgres at once
    health, elapsed = timed(lambda: client.get("/api/health"))
    report("GET /api/health, Postgres hung", health.status_code, elapsed)
    assert (health.status_code, health.json["postgres"], health.json["dynamodb"]) == (503, "database_unavailable",
                                                                                       "ok")
    assert elapsed < HEALTH_WITHIN
    # AND alice, whose user is cached, is served from DynamoDB alone without waiting
    mine, elapsed = timed(lambda: client.get("/api/message_groups", headers=alice["headers"]))
    report("GET /api/message_groups, user cached, Postgres hung", mine.status_code, elapsed)
    assert mine.status_code == 200 and elapsed < BUDGET
    # AND once Postgres answers again, the same app serves the others too
    pg_proxy.resume()
    assert client.get(f"/api/users/@{bob['handle']}/short", headers=alice["headers"]).status_code == 200


def test_health_checks_run_at_once_so_two_hung_backends_cost_one_budget(hung_config, ddb_proxy, pg_proxy):
    # GIVEN health checks of a whole second each, and both backends hung
    app = create_app(hung_config.replace(health_budget=1.0))
    try:
        client = app.test_client()
        assert client.get("/api/health").status_code == 200
        ddb_proxy.hang()
        pg_proxy.hang()
        # WHEN health is asked
        health, elapsed = timed(lambda: client.get("/api/health"))
        # THEN both are named, after about one budget, not two one after the other
        report("GET /api/health, both hung, 1 s health budget", health.status_code, elapsed)
        assert health.json == {"status": "unavailable", "postgres": "database_unavailable",
                               "dynamodb": "dynamodb_unavailable"}
        assert elapsed < 1.8
    finally:
        clients.close(app)


def test_health_checks_each_backend_at_most_once_per_ttl_however_many_ask(hung_config, ddb_proxy, pg_proxy):
    # GIVEN an app that keeps health results for a second (and gives each check time on a busy machine)
    app = create_app(hung_config.replace(health_cache_ttl=1.0, health_budget=5.0))
    try:
        client = app.test_client()
        described, selected = ddb_proxy.count(DESCRIBE), pg_proxy.count(b"SELECT 1")
        # WHEN health is asked 40 times, by 8 callers at once
        started = time.monotonic()
        statuses = concurrently(lambda: [client.get("/api/health").status_code for _ in range(5)], [()] * 8)
        elapsed = time.monotonic() - started
        # THEN every caller got an answer, and each backend was asked about once per second, not 40 times
        assert statuses == [[200] * 5] * 8
        most = int(elapsed / 1.0) + 1
        assert 1 <= ddb_proxy.count(DESCRIBE) - described <= most
        assert 1 <= pg_proxy.count(b"SELECT 1") - selected <= most
    finally:
        clients.close(app)


# ------------------------------------------------------------------ the API served by its own (gevent) server

class Client:
    """One HTTP request at a time to the live server."""

    def __init__(self, port: int):
        self.port = port

    def get(self, path: str, token: str | None = None) -> tuple[int, dict, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, time.monotonic() - started
        finally:
            conn.close()


@pytest.mark.timeout(180)
def test_under_the_gevent_server_a_hung_backend_never_holds_up_the_other_requests(hung_config, ddb_proxy, pg_proxy,
                                                                                 alice, bob, tmp_path):
    # GIVEN the API served by its own server (one worker, every connection a greenlet), through the proxies
    api = serve_api(hung_config, tmp_path / "api.log", workers=1)
    try:
        http = Client(api.port)
        assert http.get("/api/message_groups", alice["token"])[0] == 200   # alice's user is now cached
        short = f"/api/users/@{bob['handle']}/short"
        for hung, needs_it, other in ((ddb_proxy, "/api/message_groups", short),
                                      (pg_proxy, short, "/api/message_groups")):
            name = "DynamoDB" if hung is ddb_proxy else "Postgres"
            hung.hang()
            # WHEN 6 requests that need the hung backend, 6 that do not, and health come in at once
            paths = [needs_it] * 6 + [other] * 6 + ["/api/health"]
            results = concurrently(lambda p: (p, *http.get(p, None if p == "/api/health" else alice["token"])),
                                   [(p,) for p in paths])
            hung.resume()
            for path, status, _, elapsed in results:
                report(f"GET {path}, {name} hung, 13 at once", status, elapsed)
            # THEN those that need it are 503s with Retry-After within the budget
            for path, status, headers, elapsed in results[:6]:
                assert status == 503 and headers["retry-after"] and elapsed < WITHIN_BUDGET, (path, status, elapsed)
            # AND the others were served without waiting for it
            for path, status, _, elapsed in results[6:12]:
                assert status == 200 and elapsed < BUDGET, (path, status, elapsed)
            # AND health said which one, quickly
            _, status, headers, elapsed = results[12]
            assert status == 503 and headers["retry-after"] and elapsed < HEALTH_WITHIN
    finally:
        api.service.stop()
