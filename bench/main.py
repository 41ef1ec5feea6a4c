"""bench/run (bench/main.py): measure the backend on the local stack and print a table (and JSON).

Everything runs on loopback against services this script starts and stops:
the per-pattern capacity and latency of lib/ddb, the HTTP API under gunicorn
at several concurrencies next to the original bootcamp code (the baseline)
and next to the floor (the same Postgres lookup + DynamoDB query issued
directly), server CPU per request, pattern E lag, and bulk seeding.
Figures are reported as ratios to baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from http.client import HTTPConnection
from pathlib import Path

import psutil
import psycopg

from backend_flask.config import ROOT, Config
from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client
from bench.loadgen import json_body, percentile, run_load
from toolbox import local_services
from toolbox import users as tusers
from toolbox.capacity import CapacityMeter, consumed_capacity, item_size, units_to_read
from toolbox.ephemeral import ephemeral_stack
from toolbox.settings import child_env

log = logging.getLogger("bench")
PASSWORD = "Bench-passw0rd!"
RESULTS = ROOT / "bench" / "results"


# ----------------------------------------------------------------- fixtures

def make_users(config: Config, count: int) -> list[dict]:
    """Create users in cognito-local and Postgres; return them with access tokens."""
    idp = make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url)
    made = []
    for i in range(count):
        handle = f"bench{i}_{uuid.uuid4().hex[:6]}"
        made.append(tusers.create_signed_up_user(
            config.connection_url, idp, config.cognito_user_pool_id, config.cognito_client_id, handle=handle,
            display_name=f"Bench {i}", email=f"{handle}@example.test", password=PASSWORD))
    return made


def person(user: dict) -> dict:
    return {"uuid": user["uuid"], "handle": user["handle"], "display_name": user["display_name"]}


def seed_conversations(client, table: str, users: list[dict], messages_per_group: int) -> list[str]:
    """users[0] talks with every other user; return the group ids."""
    groups = []
    messages = ddb.MessagesTable(client, table)
    for other in users[1:]:
        first = messages.create_message_group(sender=person(users[0]), receiver=person(other),
                                              message="hello from the bench")
        group = first["message_group_uuid"]
        for i in range(messages_per_group - 1):
            messages.create_message(message_group_uuid=group, sender=person(users[0] if i % 2 else other),
                                    message=f"message {i}")
        groups.append(group)
    return groups


# ------------------------------------------------------------------ servers

class Gunicorn:
    """A gunicorn serving a WSGI app on a free loopback port, as deployed, with its CPU use readable."""

    def __init__(self, app: str, config: Config, workdir: Path, workers: int = 2, threads: int = 8):
        self.port = local_services.free_port()
        env = child_env(config, LOG_LEVEL="WARNING")
        self.service = local_services.start_api(env, self.port, log_path=workdir / f"{app.split(':')[0]}.log",
                                                workers=workers, threads=threads, app=app)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its workers."""
        total = 0.0
        try:
            master = psutil.Process(self.service.process.pid)
            for proc in [master, *master.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        self.service.stop()


# ------------------------------------------------------------- measurements

def timed(fn, repeat: int) -> list[float]:
    """Call fn repeat times; return each call's time in ms."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure_floor_and_api(config: Config, api: Gunicorn, user: dict, rounds: int, per_round: int) -> dict:
    """p50 of the floor and of GET /api/message_groups at one client, measured in alternating blocks.

    The floor is the user lookup and the conversations query issued directly,
    connections reused. Interleaving the two keeps drift on a noisy machine
    (JIT, GC, neighbours) from landing on one side of the ratio.
    """
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
    http = HTTPConnection("127.0.0.1", api.port, timeout=10)
    headers = {"Authorization": f"Bearer {user['token']}"}
    with psycopg.connect(config.connection_url, autocommit=True) as conn:
        def floor():
            row = conn.execute("SELECT uuid, handle, display_name FROM users WHERE cognito_user_id = %s",
                               (user["sub"],)).fetchone()
            client.query(TableName=config.ddb_message_table, KeyConditionExpression="pk = :pk",
                         ExpressionAttributeValues={":pk": {"S": f"GRP#{row[0]}"}},
                         ScanIndexForward=False, Limit=20)

        def through_api():
            http.request("GET", "/api/message_groups", headers=headers)
            response = http.getresponse()
            response.read()
            assert response.status == 200, response.status

        timed(floor, 50)
        timed(through_api, 50)
        floor_ms: list[float] = []
        api_ms: list[float] = []
        ratios: list[float] = []
        for _ in range(rounds):
            floor_round = timed(floor, per_round)
            api_round = timed(through_api, per_round)
            ratios.append(percentile(api_round, 50) / percentile(floor_round, 50))
            floor_ms += floor_round
            api_ms += api_round
    http.close()
    return {"floor_p50_ms": round(percentile(floor_ms, 50), 3), "floor_p99_ms": round(percentile(floor_ms, 99), 3),
            "api_p50_ms": round(percentile(api_ms, 50), 3), "api_p99_ms": round(percentile(api_ms, 99), 3),
            "calls_each": rounds * per_round, "rounds": rounds,
            # Each round's ratio compares neighbours in time; their median shrugs off a noisy stretch.
            "median_round_ratio": round(percentile(ratios, 50), 2)}


def read_units(items: list[dict], consistent: bool) -> float:
    """RCUs a read of these items needs at least, priced as bench/capacity.py prices calls."""
    return units_to_read(sum(item_size(i) for i in items), consistent)


def capacity_total(capacity: list[dict]) -> float:
    return round(sum(c.get("CapacityUnits", 0.0) for c in capacity), 2)


def measure_patterns(config: Config, users: list[dict], groups: list[str], repeat: int) -> list[dict]:
    """Capacity per call and latency of patterns A–E, with the minimum the design allows."""
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
    table = config.ddb_message_table
    messages = ddb.MessagesTable(client, table)
    me, group = users[0], groups[0]
    rows = []

    meter = CapacityMeter(client)

    def pattern(name: str, description: str, call, minimum: float, why: str) -> None:
        meter.reset()
        with consumed_capacity(client) as capacity:
            call()
        billed = meter.total
        samples = timed(call, repeat)
        rows.append({"pattern": name, "what": description, "capacity": round(billed, 2),
                     "local_reported": capacity_total(capacity), "minimum": minimum, "why_minimum": why,
                     "p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2)})

    raw_msgs = client.query(TableName=table, KeyConditionExpression="pk = :pk", ScanIndexForward=False,
                            ExpressionAttributeValues={":pk": {"S": f"MSG#{group}"}}, Limit=20)["Items"]
    raw_grps = client.query(TableName=table, KeyConditionExpression="pk = :pk", ScanIndexForward=False,
                            ExpressionAttributeValues={":pk": {"S": f"GRP#{me['uuid']}"}}, Limit=20)["Items"]
    pattern("A", "list 20 messages (+ membership read)",
            lambda: (messages.is_member(group, me["uuid"]), messages.list_messages(group, limit=20)),
            1.0 + read_units(raw_msgs, consistent=False),
            "1 strongly consistent GetItem + eventually consistent Query, 0.5 RCU per 4 KB")
    pattern("B", "list 20 conversations",
            lambda: messages.list_message_groups(me["uuid"], limit=20),
            read_units(raw_grps, consistent=False), "eventually consistent Query, 0.5 RCU per 4 KB")
    # Every call of C needs a pair of users who have no conversation yet.
    pairs = iter(lambda: tuple({"uuid": str(uuid.uuid4()), "handle": f"p{uuid.uuid4().hex[:8]}",
                                "display_name": "Pair"} for _ in range(2)), None)
    pattern("C", "new conversation: 2 rows + message + 2 memberships, one transaction",
            lambda: _create_pair(messages, pairs),
            5 * 2 + 2 * 1, "5 transactional writes (2 WCU each) + 2 GSI entries for the conversation rows")
    pattern("D", "append a message (membership read + conditional put)",
            lambda: (messages.is_member(group, me["uuid"]),
                     messages.create_message(message_group_uuid=group, sender=person(me), message="bench append")),
            1.0 + 1.0, "1 strongly consistent GetItem + 1 conditional PutItem; messages stay out of the GSI")
    counter = iter(range(10**9))
    pattern("E", "move both conversation rows to a new message",
            lambda: messages.move_message_groups(group, ddb.now_iso(), f"moved {next(counter)}"),
            0.5 + 2 * (2 * 2) + 2 * 2,
            "GSI Query (0.5) + per row Delete+Put in a transaction (4 WCU) and its GSI delete+put (2)")
    return rows


def _create_pair(messages: ddb.MessagesTable, pairs):
    sender, receiver = next(pairs)
    return messages.create_message_group(sender=sender, receiver=receiver, message="first")


def measure_http(api: Gunicorn, users: list[dict], groups: list[str], concurrencies: list[int],
                 requests: int, max_seconds: float) -> list[dict]:
    """Throughput, latency and server CPU per request of the three routes."""
    me = users[0]
    auth = {"Authorization": f"Bearer {me['token']}"}
    others = users[1:]
    routes = {
        "GET /api/message_groups": lambda c, n: ("GET", "/api/message_groups", None, auth),
        "GET /api/messages/<uuid>": lambda c, n: ("GET", f"/api/messages/{groups[n % len(groups)]}", None, auth),
        "POST /api/messages": lambda c, n: (
            "POST", "/api/messages",
            json_body({"message": f"load {c}-{n}", "message_group_uuid": groups[c % len(groups)]}),
            {"Authorization": f"Bearer {others[c % len(others)]['token']}", "Content-Type": "application/json"}),
    }
    return [load_row(api, name, make, clients, requests, max_seconds, warmup=min(50, requests // 10))
            for name, make in routes.items() for clients in concurrencies]


def load_row(server: Gunicorn, route: str, make, clients: int, requests: int, max_seconds: float,
             warmup: int) -> dict:
    """Run one closed-loop load against a server; return its figures with the server's CPU per request."""
    cpu_before = server.cpu_seconds()
    result = run_load(server.port, make, clients=clients, requests=requests, max_seconds=max_seconds, warmup=warmup)
    cpu = server.cpu_seconds() - cpu_before
    return {"route": route, "clients": clients, **result.summary(),
            "server_cpu_ms_per_request": round(1000 * cpu / max(1, result.requests), 2)}


def measure_stream_lag(api: Gunicorn, users: list[dict], groups: list[str], samples: int) -> dict:
    """Time from a POST's answer until the receiver's conversation list shows that message on top."""
    lags = []
    for i in range(samples):
        sender, receiver = users[1 + i % (len(users) - 1)], users[0]
        group = groups[i % (len(users) - 1)]  # groups[k] is users[0]'s conversation with users[k + 1]
        text = f"lag probe {uuid.uuid4().hex[:8]}"
        _http(api.port, "POST", "/api/messages", sender, {"message": text, "message_group_uuid": group})
        start = time.perf_counter()
        deadline = start + 10
        while time.perf_counter() < deadline:
            top = _http(api.port, "GET", "/api/message_groups?limit=1", receiver)
            if top and top[0]["message"] == text:
                lags.append((time.perf_counter() - start) * 1000)
                break
            time.sleep(0.01)
    return {"samples": samples, "seen": len(lags), "p50_ms": round(percentile(lags, 50), 1),
            "p99_ms": round(percentile(lags, 99), 1)}


def _http(port: int, method: str, path: str, user: dict, body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {user['token']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def measure_seed(config: Config, users: list[dict], messages: int) -> dict:
    """bin/ddb/seed --messages N against a raw BatchWriteItem loop writing the same number of items."""
    env = child_env(config)
    start = time.perf_counter()
    subprocess.run([str(ROOT / "bin" / "ddb" / "seed"), "--messages", str(messages), users[0]["handle"],
                    users[1]["handle"]], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    seed_seconds = time.perf_counter() - start
    client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
    group = str(uuid.uuid4())
    start = time.perf_counter()
    for offset in range(0, messages, 25):
        batch = [{"PutRequest": {"Item": {
            "pk": {"S": f"MSG#{group}"}, "sk": {"S": f"2020-01-01T00:00:00.{n:06d}+00:00"},
            "message_uuid": {"S": str(uuid.uuid4())}, "message": {"S": f"raw {n}"},
            "user_uuid": {"S": users[0]["uuid"]}, "user_display_name": {"S": "Bench"},
            "user_handle": {"S": users[0]["handle"]}}}} for n in range(offset, min(messages, offset + 25))]
        pending = {config.ddb_message_table: batch}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None
    raw_seconds = time.perf_counter() - start
    return {"messages": messages, "seed_per_s": round(messages / seed_seconds),
            "raw_per_s": round(messages / raw_seconds), "seed_vs_raw": round(raw_seconds / seed_seconds, 2)}


# --------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: finishes in under a minute")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("backend_flask", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sizes = ({"users": 6, "per_group": 25, "repeat": 30, "rounds": 8, "requests": 300, "seconds": 4, "lag": 5,
              "seed": 2000, "concurrency": [1, 8, 32]} if args.quick else
             {"users": 12, "per_group": 60, "repeat": 300, "rounds": 20, "requests": 3000, "seconds": 20, "lag": 30,
              "seed": 100000, "concurrency": [1, 8, 32]})
    report: dict = {"machine": machine(), "quick": args.quick, "sizes": sizes}
    from toolbox import stream_runner

    with tempfile.TemporaryDirectory() as tmp, ephemeral_stack(Path(tmp)) as stack:
        config = stack.config
        client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
        log.info("creating %s users and their conversations", sizes["users"])
        users = make_users(config, sizes["users"])
        groups = seed_conversations(client, config.ddb_message_table, users, sizes["per_group"])
        # Patterns first, while nothing else touches the table (the stream runner would race E).
        log.info("patterns A-E")
        report["patterns"] = measure_patterns(config, users, groups, sizes["repeat"])
        # The runner is its own process, as the Lambda is in AWS: in this one it would hold the GIL
        # while the measurements below run.
        runner = stream_runner.start_process(config, log_path=Path(tmp) / "stream-runner.log")
        api = Gunicorn("backend_flask.wsgi:app", config, Path(tmp))
        baseline = Gunicorn("bench.baseline_app:app", config, Path(tmp))
        try:
            time.sleep(2)  # let the runner work through the seeding backlog
            log.info("floor and API at one client, interleaved")
            report["floor"] = measure_floor_and_api(config, api, users[0], sizes["rounds"], 50)
            log.info("HTTP: baseline (original code)")
            report["baseline"] = measure_http_baseline(baseline, users, sizes)
            log.info("HTTP: this API")
            report["http"] = measure_http(api, users, groups, sizes["concurrency"], sizes["requests"],
                                          sizes["seconds"])
            log.info("pattern E lag")
            report["stream_lag"] = measure_stream_lag(api, users, groups, sizes["lag"])
        finally:
            api.stop()
            baseline.stop()
            runner.stop()
        log.info("seeding %s messages", sizes["seed"])
        report["seed"] = measure_seed(config, users, sizes["seed"])
    report["summary"] = summarize(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwritten: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


def measure_http_baseline(baseline: Gunicorn, users: list[dict], sizes: dict) -> list[dict]:
    auth = {"Authorization": f"Bearer {users[0]['token']}"}
    return [load_row(baseline, "GET /api/message_groups (baseline)",
                     lambda c, n: ("GET", "/api/message_groups", None, auth), clients,
                     max(100, sizes["requests"] // 5), sizes["seconds"], warmup=10)
            for clients in sizes["concurrency"]]


def summarize(report: dict) -> dict:
    """The ratios the targets are stated in."""
    groups_rows = {r["clients"]: r for r in report["http"] if r["route"] == "GET /api/message_groups"}
    base_rows = {r["clients"]: r for r in report["baseline"]}
    best_api = max(r["rps"] for r in groups_rows.values())
    best_base = max(r["rps"] for r in base_rows.values())
    floor = report["floor"]
    return {
        "p50_vs_floor": floor["median_round_ratio"],
        "p50_vs_floor_pooled": round(floor["api_p50_ms"] / floor["floor_p50_ms"], 2),
        "p50_vs_baseline": round(groups_rows[1]["p50_ms"] / base_rows[1]["p50_ms"], 2),
        "throughput_vs_baseline": round(best_api / best_base, 2),
        "server_cpu_ms_per_request": groups_rows[max(groups_rows)]["server_cpu_ms_per_request"],
        "baseline_cpu_ms_per_request": base_rows[max(base_rows)]["server_cpu_ms_per_request"],
        "patterns_at_minimum": all(p["capacity"] <= p["minimum"] + 1e-9 for p in report["patterns"]),
        "http_5xx": sum(v for r in report["http"] for k, v in r["statuses"].items() if k.startswith("5")),
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def render(report: dict) -> str:
    """Format the report as plain-text tables."""
    out = [f"machine: {report['machine']['cpus']} cpus, {report['machine']['memory_gib']} GiB, "
           f"Python {report['machine']['python']}; {'quick' if report['quick'] else 'full'} run", ""]
    floor = report["floor"]
    out.append(f"one client, interleaved ({floor['calls_each']} calls each):")
    out.append(f"  floor (Postgres lookup + DynamoDB query, direct): p50 {floor['floor_p50_ms']:.2f} ms, "
               f"p99 {floor['floor_p99_ms']:.2f} ms")
    out.append(f"  GET /api/message_groups through gunicorn:         p50 {floor['api_p50_ms']:.2f} ms, "
               f"p99 {floor['api_p99_ms']:.2f} ms")
    out += ["", "capacity units per call: 'AWS bill' priced from each request and answer with on-demand rules",
            "(bench/capacity.py); 'Local says' is DynamoDB Local's own figure, wrong for transactions", "",
            "pattern  AWS bill  minimum  Local says  p50 ms  p99 ms  what"]
    for p in report["patterns"]:
        out.append(f"{p['pattern']:<8} {p['capacity']:>8.1f} {p['minimum']:>8.1f} {p['local_reported']:>11.1f} "
                   f"{p['p50_ms']:>7.2f} {p['p99_ms']:>7.2f}  {p['what']}")
    out += ["", f"{'route':<40} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms/req':>10}  statuses"]
    for r in report["baseline"] + report["http"]:
        out.append(f"{r['route']:<40} {r['clients']:>7} {r['rps']:>8.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                   f"{r['server_cpu_ms_per_request']:>10.2f}  {r['statuses']}")
    lag = report["stream_lag"]
    out += ["", f"pattern E lag (POST -> receiver's list shows it): p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms "
                f"({lag['seen']}/{lag['samples']} seen)"]
    seed = report["seed"]
    out.append(f"seed {seed['messages']} messages: bin/ddb/seed {seed['seed_per_s']}/s, raw BatchWriteItem "
               f"{seed['raw_per_s']}/s (seed/raw speed {seed['seed_vs_raw']})")
    s = report["summary"]
    out += ["", "summary (ratios within this run):",
            f"  API p50 / floor p50 (1 client, interleaved): {s['p50_vs_floor']} median of rounds, "
            f"{s['p50_vs_floor_pooled']} pooled   (target <= 1.5)",
            f"  API p50 / baseline p50 (1 client):       {s['p50_vs_baseline']}",
            f"  API req/s / baseline req/s (best):       {s['throughput_vs_baseline']}   (target >= 4)",
            f"  server CPU per request (API, baseline):  {s['server_cpu_ms_per_request']} ms, "
            f"{s['baseline_cpu_ms_per_request']} ms   (target ~2 ms)",
            f"  every pattern at its minimum capacity:   {s['patterns_at_minimum']}",
            f"  5xx responses:                           {s['http_5xx']}"]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
