"""HTTP measurements: the routes under load on each server, pattern E lag at set rates, and the CPU profile."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from bench import cpuprofile
from bench.loadgen import Request, json_body, percentile, run_load
from bench.patterns import timed
from bench.servers import DUMP, RESET, RunningServer, cpu_delta, signal_workers

MakeRequest = Callable[[int, int], Request]
ROUTE_B = "GET /api/message_groups"
ROUTE_A = "GET /api/messages/<uuid>"
ROUTE_D = "POST /api/messages"


def routes(users: list[dict], groups: list[str]) -> dict[str, MakeRequest]:
    """The three routes as the frontend calls them: users[0] reads; users[k+1] posts into groups[k]."""
    me, others = users[0], users[1:]
    auth = {"Authorization": f"Bearer {me['token']}"}
    return {
        ROUTE_B: lambda c, n: ("GET", "/api/message_groups", None, auth),
        ROUTE_A: lambda c, n: ("GET", f"/api/messages/{groups[n % len(groups)]}", None, auth),
        ROUTE_D: lambda c, n: (
            "POST", "/api/messages",
            json_body({"message": f"load {c}-{n}", "message_group_uuid": groups[c % len(groups)]}),
            {"Authorization": f"Bearer {others[c % len(others)]['token']}", "Content-Type": "application/json"}),
    }


def load_row(server: RunningServer, route: str, make: MakeRequest, clients: int, requests: int,
             max_seconds: float, warmup: int) -> dict:
    """Warm up, then run one closed-loop load; return its figures, server CPU per request and requests per worker."""
    if warmup:
        run_load(server.port, make, clients=clients, requests=warmup, max_seconds=max_seconds / 4)
    before, offset = server.cpu_seconds(), server.log_offset()
    result = run_load(server.port, make, clients=clients, requests=requests, max_seconds=max_seconds)
    cpu = cpu_delta(before, server.cpu_seconds(), server.service.process.pid)
    served = max(1, result.requests)
    return {"server": server.spec.key, "route": route, "clients": clients, **result.summary(),
            "server_cpu_ms_per_request": round(1000 * cpu["total"] / served, 2),
            "master_cpu_ms_per_request": round(1000 * cpu["master"] / served, 3),
            "worker_cpu_s": sorted((round(s, 2) for s in cpu["workers"].values()), reverse=True),
            "worker_requests": sorted(server.requests_per_worker(offset).values(), reverse=True)}


def measure_servers(servers: list[RunningServer], make: dict[str, MakeRequest], concurrencies: list[int],
                    requests: dict[str, int], max_seconds: float) -> list[dict]:
    """Every route at every concurrency on every server.

    The servers take turns on each (route, clients), so drift hits them alike,
    and who goes first rotates, so no server always follows another's load.
    """
    rows = []
    turn = 0
    for route, request in make.items():
        for clients in concurrencies:
            for server in servers[turn % len(servers):] + servers[:turn % len(servers)]:
                count = requests[server.spec.key]
                rows.append(load_row(server, route, request, clients, count, max_seconds,
                                     warmup=min(50, max(clients, count // 10))))
            turn += 1
    order = {s.spec.key: i for i, s in enumerate(servers)}
    return sorted(rows, key=lambda r: (list(make).index(r["route"]), r["clients"], order[r["server"]]))


# ------------------------------------------------------------------ pattern E lag

def _call(conn: http.client.HTTPConnection, method: str, path: str, token: str, body: dict | None = None):
    conn.request(method, path, body=json.dumps(body).encode() if body else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    return json.loads(data)


def drain_stream(port: int, receiver: dict, sender: dict, group: str, timeout: float = 120.0) -> float:
    """Post a probe and wait until the receiver's list shows it, so earlier writes are handled; return seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start = time.perf_counter()
    probe = _call(conn, "POST", "/api/messages", sender["token"],
                  {"message": "drain probe", "message_group_uuid": group})
    while time.perf_counter() - start < timeout:
        rows = _call(conn, "GET", "/api/message_groups?limit=100", receiver["token"])
        if any(r["uuid"] == group and r["created_at"] >= probe["created_at"] for r in rows):
            break
        time.sleep(0.05)
    conn.close()
    return time.perf_counter() - start


def measure_lag(port: int, receiver: dict, senders: list[tuple[dict, str]], rate: float, seconds: float,
                poll_every: float = 0.01, settle: float = 10.0, threads: int = 4) -> dict:
    """Post `rate` messages a second for `seconds`; time each until the receiver's list shows it (or a newer one).

    Posts leave on schedule from `threads` sender threads (open loop: a slow
    answer does not delay the next post unless every thread is busy). One
    poller reads the receiver's conversation list every `poll_every` seconds;
    a message counts as seen when its conversation's row there is at least as
    new as the message (a later message may supersede it first). First the
    stream's backlog (earlier loads) is drained, so it delays nothing measured.
    """
    drained = drain_stream(port, receiver, *senders[0])
    pending: dict[int, tuple[str, str, float]] = {}   # n -> (group, created_at, answered at)
    lags: list[float] = []
    lock = threading.Lock()
    sending_done = threading.Event()
    stop = threading.Event()
    local = threading.local()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            rows = _call(conn, "GET", f"/api/message_groups?limit={min(100, len(senders) + 30)}", receiver["token"])
            now = time.perf_counter()
            shown = {r["uuid"]: r["created_at"] for r in rows}
            with lock:
                for n, (group, created_at, answered) in list(pending.items()):
                    if shown.get(group, "") >= created_at:
                        lags.append((now - answered) * 1000)
                        del pending[n]
                if sending_done.is_set() and not pending:
                    break
            time.sleep(poll_every)
        conn.close()

    started: list[float] = []

    def send(n: int) -> None:
        started.append(time.perf_counter())
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sender, group = senders[n % len(senders)]
        created = _call(local.conn, "POST", "/api/messages", sender["token"],
                        {"message": f"lag {rate}/s #{n}", "message_group_uuid": group})
        answered = time.perf_counter()
        with lock:
            pending[n] = (group, created["created_at"], answered)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    count = max(2, round(rate * seconds))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = []
        for n in range(count):
            wait = start + n / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            futures.append(pool.submit(send, n))
        for future in futures:
            future.result()
    sending_done.set()
    poller.join(settle)
    stop.set()
    # Posts per second as they left: (n - 1) intervals between the first and the last.
    span = max(started) - min(started)
    return {"rate": rate, "drained_s": round(drained, 2), "sent": count,
            "achieved_rate": round((count - 1) / span, 1) if span > 0 else None,
            "conversations": len(senders), "seen": len(lags),
            "p50_ms": round(percentile(lags, 50), 1), "p99_ms": round(percentile(lags, 99), 1)}


# ------------------------------------------------------------------ CPU profile

def measure_cpu_profile(server: RunningServer, profile_dir: Path, make: dict[str, MakeRequest], clients: int,
                        requests: int, max_seconds: float) -> dict:
    """Run each route's load against a profiled server; return per route the CPU per request of each layer."""
    out = {}
    for route, request in make.items():
        run_load(server.port, request, clients=clients, requests=min(100, requests), max_seconds=max_seconds / 4)
        signal_workers(server, RESET, profile_dir, "reset")
        before = server.cpu_seconds()
        result = run_load(server.port, request, clients=clients, requests=requests, max_seconds=max_seconds)
        cpu = cpu_delta(before, server.cpu_seconds(), server.service.process.pid)
        counts = signal_workers(server, DUMP, profile_dir, "counts")
        out[route] = breakdown(counts, cpu, result.requests)
    return out


def breakdown(counts: list[dict], cpu: dict, requests: int) -> dict:
    """Spread the workers' CPU over the layers by their share of samples; the master's goes to the HTTP server."""
    layers = {layer: sum(c["layers"].get(layer, 0) for c in counts) for layer in cpuprofile.LAYERS}
    samples = sum(layers.values())
    workers_s = sum(cpu["workers"].values())
    served = max(1, requests)
    ms = {layer: 1000 * workers_s * (n / samples if samples else 0) / served for layer, n in layers.items()}
    ms[cpuprofile.HTTP] += 1000 * cpu["master"] / served
    files: dict[str, int] = {}
    for c in counts:
        for name, n in c.get("top_files", {}).items():
            files[name] = files.get(name, 0) + n
    return {"requests": requests, "samples": samples, "workers_cpu_s": round(workers_s, 3),
            "master_cpu_s": round(cpu["master"], 3),
            "cpu_ms_per_request": round(1000 * cpu["total"] / served, 3),
            "layers_ms_per_request": {layer: round(v, 3) for layer, v in ms.items()},
            "top_files": dict(sorted(files.items(), key=lambda kv: -kv[1])[:15])}


# ------------------------------------------------------------------ the floor

FLOOR_LABEL = "floor: Postgres SELECT (user by Cognito sub) + DynamoDB Query (GRP#<me>, 20 rows), direct"
QUERY_LABEL = "the floor's DynamoDB Query alone, direct"


def measure_floor(config: Config, port: int, user: dict, rounds: int, per_round: int) -> dict:
    """p50 of the floor, of its DynamoDB Query alone, and of GET /api/message_groups at one client.

    The three are measured in alternating blocks, so drift on a noisy machine
    (JIT, GC, neighbours) does not land on one side of a ratio. The API serves
    the user from its cache (USER_CACHE_TTL) after checking the token: the
    floor's Postgres lookup is work the API skips, and the Query alone is the
    strictest comparison.
    """
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
    conn_http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {user['token']}"}

    def query(user_uuid: str) -> None:
        client.query(TableName=config.ddb_message_table, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": f"GRP#{user_uuid}"}}, ScanIndexForward=False, Limit=20)

    def through_api() -> None:
        conn_http.request("GET", "/api/message_groups", headers=headers)
        response = conn_http.getresponse()
        response.read()
        assert response.status == 200, response.status

    with psycopg.connect(config.connection_url, autocommit=True) as conn:
        def floor() -> None:
            row = conn.execute("SELECT uuid FROM users WHERE cognito_user_id = %s", (user["sub"],)).fetchone()
            query(str(row[0]))

        calls = {"floor": floor, "query": lambda: query(user["uuid"]), "api": through_api}
        samples: dict[str, list[float]] = {name: [] for name in calls}
        ratios: list[float] = []
        for fn in calls.values():
            timed(fn, 50)
        for _ in range(rounds):
            block = {name: timed(fn, per_round) for name, fn in calls.items()}
            ratios.append(percentile(block["api"], 50) / percentile(block["floor"], 50))
            for name, values in block.items():
                samples[name] += values
    conn_http.close()
    out = {"calls_each": rounds * per_round, "rounds": rounds, "floor_label": FLOOR_LABEL, "query_label": QUERY_LABEL,
           # Each round's ratio compares neighbours in time; their median shrugs off a noisy stretch.
           "median_round_ratio": round(percentile(ratios, 50), 2)}
    for name, values in samples.items():
        out[f"{name}_p50_ms"] = round(percentile(values, 50), 3)
        out[f"{name}_p99_ms"] = round(percentile(values, 99), 3)
    return out
