"""bench/run (bench/main.py): measure the backend on the local stack and print a report (and JSON).

Everything runs on loopback against services this script starts and stops:
patterns A–E and mark read through the services the API calls (capacity
billed against the least the access pattern allows, latency), the HTTP API on each server configuration at 1, 8
and 32 clients next to the original bootcamp code (the baseline) and next to
the floor, server CPU per request and where it goes, pattern E lag at set
rates, how A, B and D grow with the data, and bulk seeding. Figures are
reported as ratios to baselines measured in the same run.

    bench/run            full run (several minutes; the report says how long), README's figures
    bench/run --quick    reduced sizes (about a minute), labelled as such
    bench/run --readme   put bench/results/latest.json (a full run) into README's block; runs nothing
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psutil

from backend_flask.config import ROOT, Config
from backend_flask.lib import ddb
from backend_flask.lib.aws import make_client
from backend_flask.lib.db import Db, make_pool
from backend_flask.lib.pubsub import Bus
from bench import loads, patterns, report
from bench.servers import SERVERS, RunningServer, start_all
from toolbox import seed, stream_runner
from toolbox import users as tusers
from toolbox.ephemeral import ephemeral_stack

log = logging.getLogger("bench")
PASSWORD = "Bench-passw0rd!"
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
README_RESULTS = RESULTS / "readme.json"
CONVERSATIONS = 24   # the bench user's conversations: more than a page of 20

QUICK = {"users": 6, "per_group": 25, "repeat": 30, "rounds": 6, "per_round": 40, "seconds": 1.5,
         "requests": {"api": 150, "api-gthread": 150, "baseline": 40}, "concurrency": [1, 8, 32],
         "profile_requests": 250, "lag_rates": [1, 10, 50], "lag_seconds": 2,
         "growth_messages": [10, 500, 2000], "growth_rows": [10, 100, 1000], "growth_repeat": 30, "seed_threads": 4}
FULL = {"users": 12, "per_group": 60, "repeat": 300, "rounds": 20, "per_round": 50, "seconds": 15,
        "requests": {"api": 2000, "api-gthread": 2000, "baseline": 500}, "concurrency": [1, 8, 32],
        "profile_requests": 2000, "lag_rates": [1, 10, 50], "lag_seconds": 15,
        "growth_messages": [10, 1000, 100000], "growth_rows": [10, 1000, 10000], "growth_repeat": 200,
        "seed_threads": 4}


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


def seed_conversations(table: ddb.MessagesTable, users: list[dict], messages_per_group: int) -> list[str]:
    """users[0] talks with every other user (groups[k] with users[k + 1]); then with made-up people up to
    CONVERSATIONS conversations in all. Return the groups of real users (the ones the API can post into)."""
    groups = []
    for other in users[1:]:
        first = table.create_message_group(sender=person(users[0]), receiver=person(other),
                                           message="hello from the bench")
        group = first["message_group_uuid"]
        for i in range(messages_per_group - 1):
            table.create_message(message_group_uuid=group, sender=person(users[0] if i % 2 else other),
                                 message=f"message {i}")
        groups.append(group)
    for _ in range(CONVERSATIONS - len(groups)):
        table.create_message_group(sender=person(users[0]), receiver=patterns.person("pen pal"),
                                   message="hello from the bench")
    return groups


@contextlib.contextmanager
def event_bus(config: Config) -> Iterator[Bus]:
    """The API's event bus on the stack's Postgres, so the patterns publish what the API publishes."""
    pool = make_pool(config.connection_url, min_size=1, max_size=4, timeout=config.db_timeout)
    pool.open()
    bus = Bus(Db(pool), config.connection_url, timeout=config.db_timeout)
    try:
        yield bus
    finally:
        bus.close()
        pool.close()


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(terse=True),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def idle_poll() -> float:
    """The stream runner's idle poll as `stream_runner.start_process` runs it (its default)."""
    return inspect.signature(stream_runner.StreamRunner.__init__).parameters["idle_poll"].default


# --------------------------------------------------------------------- run

def run(sizes: dict, quick: bool) -> dict:
    """Start a throw-away stack, measure everything, return the result dict."""
    started = time.monotonic()
    result: dict = {"machine": machine(), "quick": quick, "sizes": sizes,
                    "load_average": {"before": os.getloadavg()[0]}, "event_bus": True,
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "servers": [{"key": s.key, "label": s.label} for s in SERVERS]}
    with tempfile.TemporaryDirectory() as tmp, ephemeral_stack(Path(tmp)) as stack, event_bus(stack.config) as bus:
        workdir, config = Path(tmp), stack.config
        client = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url)
        table = ddb.MessagesTable(client, config.ddb_message_table)
        reader = patterns.Reader(make_client("dynamodb", region=config.aws_region,
                                             endpoint_url=config.aws_endpoint_url), config.ddb_message_table)
        log.info("creating %s users and their conversations", sizes["users"])
        users = make_users(config, sizes["users"])
        groups = seed_conversations(table, users, sizes["per_group"])
        # Patterns first, while nothing else touches the table (the stream runner would race E).
        log.info("patterns A-E")
        result["patterns"] = patterns.measure_patterns(table, reader, person(users[0]), groups[0], person(users[1]),
                                                       sizes["repeat"], bus=bus)
        # The runner is its own process, as the Lambda is in AWS.
        runner = stream_runner.start_process(config, log_path=workdir / "stream-runner.log")
        try:
            servers = start_all(SERVERS, config, workdir)
        except BaseException:
            runner.stop()
            raise
        try:
            time.sleep(2)  # let the runner work through the backlog of the fixtures
            api = servers[0]
            log.info("floor and API at one client, interleaved")
            result["floor"] = loads.measure_floor(config, api.port, users[0], sizes["rounds"], sizes["per_round"])
            make = loads.routes(users, groups)
            log.info("HTTP: %s", ", ".join(s.spec.key for s in servers))
            result["http"] = loads.measure_servers(servers, make, sizes["concurrency"], sizes["requests"],
                                                   sizes["seconds"])
            log.info("pattern E lag")
            senders = list(zip(users[1:], groups, strict=True))
            result["lag"] = {"idle_poll_s": idle_poll(), "poll_ms": 10, "server": api.spec.key, "rates": [
                loads.measure_lag(api.port, users[0], senders, rate, sizes["lag_seconds"])
                for rate in sizes["lag_rates"]]}
            for server in servers:
                server.stop()
            log.info("CPU profile")
            profile_dir = workdir / "profile"
            profiled = RunningServer(SERVERS[0], config, workdir, profile_dir=profile_dir)
            try:
                result["profile"] = {"server": "api", "clients": 8, "routes": loads.measure_cpu_profile(
                    profiled, profile_dir, make, 8, sizes["profile_requests"], sizes["seconds"])}
            finally:
                profiled.stop()
        finally:
            for server in servers:
                server.stop()
            runner.stop()
        log.info("growth: seeding conversations of %s messages and users of %s conversation rows",
                 sizes["growth_messages"], sizes["growth_rows"])
        largest = max(sizes["growth_messages"])
        result["seed"], biggest = patterns.measure_seeding(table, client, largest, sizes["seed_threads"])
        conversations = {n: patterns.conversation_of(table, n) for n in sizes["growth_messages"] if n != largest}
        conversations[largest] = biggest
        owners = {}
        for n in sizes["growth_rows"]:
            owners[n] = patterns.person("owner")
            seed.seed_conversation_rows(table, owners[n], n)
        result["growth"] = {"repeat": sizes["growth_repeat"], "rows": patterns.measure_growth(
            table, conversations, owners, sizes["growth_repeat"], bus=bus)}
        result["growth"]["ratios"] = patterns.growth_ratios(result["growth"]["rows"])
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["load_average"]["after"] = os.getloadavg()[0]
    result["summary"] = report.summarize(result)
    return result


def write_readme(source: Path) -> str:
    """Copy a full run's result to bench/results/readme.json and regenerate README's block from it."""
    result = json.loads(source.read_text())
    block = report.readme_block(result)
    if source.resolve() != README_RESULTS.resolve():
        README_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    README.write_text(report.replace_readme_block(README.read_text(), block))
    return block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: about a minute")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--readme", action="store_true",
                        help="regenerate README's block from --out (a full run's result); runs nothing")
    args = parser.parse_args(argv)
    if args.readme:
        print(write_readme(args.out))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("backend_flask", "botocore", "toolbox.seed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(QUICK if args.quick else FULL, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result))
    print(f"\nwritten: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
