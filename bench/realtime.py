"""bench/run-realtime (bench/realtime.py): the event stream under 1,000 listeners, on a throw-away local stack.

One asyncio process holds every listener (a socket each, not a thread each);
a second one posts messages at a fixed rate and calls a REST route at a fixed
rate (so neither's client work delays the other's clock readings), all on
loopback against the API's own server (two workers), and reports:

- POST-to-event latency: from just before a POST is written to the moment a
  listener of the sender or the receiver has parsed its `message` event, over
  every delivery (targets: p50 <= 100 ms, p99 <= 500 ms);
- REST p99 (GET /api/message_groups at a fixed rate, while messages are
  posted) with the listeners connected, against the same load without them,
  in alternating rounds of the same run (target: within 1.5x);
- memory per idle stream: the server's resident memory (master and workers)
  with every listener connected and idle, minus before, per listener.

`run(config, workdir, ...)` measures against a stack someone else started
(bench/main.py can call it and print `report(result)`); `main()` starts its
own. Loops are bounded by count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from backend_flask.config import ROOT, Config
from toolbox import local_services
from toolbox import users as tusers
from toolbox.ephemeral import ephemeral_stack
from toolbox.settings import child_env
from toolbox.sse import ChunkedDecoder, SSEParser, events_path, request_bytes

log = logging.getLogger("bench.realtime")
PASSWORD = "Bench-passw0rd!"
RESULTS = ROOT / "bench" / "results"
CONNECT_BATCH = 50          # listeners opened at a time


def percentile(values: list[float], p: float) -> float:
    """Return the p-th percentile (nearest rank) of values, 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ HTTP over asyncio

class Connection:
    """One keep-alive HTTP/1.1 connection: requests with JSON bodies, answers with Content-Length."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        self.writer.write(head + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        answer = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(lines[0].split()[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """A few keep-alive connections, so one slow answer does not delay the next scheduled request."""

    def __init__(self, port: int, size: int):
        self.free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self.free.put_nowait(Connection(port))

    async def request(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            return await conn.request(method, path, token, body)
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            raise
        finally:
            self.free.put_nowait(conn)


# ------------------------------------------------------------------ listeners

@dataclass
class Deliveries:
    """When each listener parsed each bench message (time.monotonic(): one clock for every process)."""

    arrivals: list[tuple[str, float]] = field(default_factory=list)   # (text, when)


class Listener:
    """One SSE connection to GET /api/events."""

    def __init__(self, port: int, token: str, deliveries: Deliveries):
        self.port = port
        self.token = token
        self.deliveries = deliveries
        self.opened = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.failed: str | None = None

    async def run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(request_bytes("127.0.0.1", self.port, events_path(),
                                            {"Authorization": f"Bearer {self.token}"}))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split()[1])
            if status != 200:
                self.failed = f"status {status}"
                return
            decoder, parser = ChunkedDecoder(), SSEParser()
            while not decoder.done:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                events = parser.feed(decoder.feed(chunk))
                if parser.last_id is not None:
                    self.opened.set()
                now = time.monotonic()
                for event in events:
                    if event.event == "message":
                        self.deliveries.arrivals.append((json.loads(event.data)["message"], now))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
        finally:
            self.opened.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------ load

@dataclass
class Phase:
    """What one stretch of fixed-rate load measured."""

    rest_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    posted: list[tuple[str, int, float]] = field(default_factory=list)   # (text, conversation, sent at)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def fixed_rate(rate: float, seconds: float, call) -> None:
    """Start call(i) at rate per second for `seconds`, each in its own task; wait for them all."""
    started = time.monotonic()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(i)))
    await asyncio.gather(*tasks)


async def load(port: int, users: list[dict], groups: list[str], *, rate: float, rest_rate: float, seconds: float,
               tag: str) -> Phase:
    """Post `rate` messages/s round the conversations and GET /api/message_groups `rest_rate` times/s."""
    phase = Phase()
    posts, rests = Pool(port, 8), Pool(port, 8)

    async def post(i: int) -> None:
        pair = i % len(groups)
        sender = users[2 * pair + (i // len(groups)) % 2]
        text = f"{tag} {i} {uuid.uuid4().hex[:8]}"
        start = time.monotonic()
        try:
            status, _ = await posts.request("POST", "/api/messages", sender["token"],
                                            {"message_group_uuid": groups[pair], "message": text})
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.error(type(exc).__name__)
            return
        phase.post_ms.append((time.monotonic() - start) * 1000)
        if status == 200:
            phase.posted.append((text, pair, start))
        else:
            phase.error(f"POST {status}")

    async def rest(i: int) -> None:
        user = users[i % len(users)]
        start = time.monotonic()
        try:
            status, _ = await rests.request("GET", "/api/message_groups", user["token"])
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.error(type(exc).__name__)
            return
        phase.rest_ms.append((time.monotonic() - start) * 1000)
        if status != 200:
            phase.error(f"GET {status}")

    await asyncio.gather(fixed_rate(rate, seconds, post), fixed_rate(rest_rate, seconds, rest))
    return phase


def load_in_child(*args, **kwargs) -> Phase:
    """Run `load` in this (child) process: its client work must not delay the listeners' process, nor they it."""
    return asyncio.run(load(*args, **kwargs))


# ------------------------------------------------------------------ the run

def server_cpu(service: local_services.Service) -> float:
    """CPU seconds the server's master and workers have used so far."""
    master = psutil.Process(service.process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [master, *master.children(recursive=True)])


def server_rss(service: local_services.Service) -> int:
    """Resident memory of the server's master and workers."""
    master = psutil.Process(service.process.pid)
    return sum(p.memory_info().rss for p in [master, *master.children(recursive=True)])


async def connect(port: int, users: list[dict], listeners: int, deliveries: Deliveries) -> tuple[list, list]:
    """Open the listeners, CONNECT_BATCH at a time; return them and their tasks once each has its first id."""
    opened: list[Listener] = []
    tasks = []
    for i in range(listeners):
        listener = Listener(port, users[i % len(users)]["token"], deliveries)
        opened.append(listener)
        tasks.append(asyncio.create_task(listener.run()))
        if len(opened) % CONNECT_BATCH == 0:
            await asyncio.wait_for(asyncio.gather(*(x.opened.wait() for x in opened[-CONNECT_BATCH:])), 60)
    await asyncio.wait_for(asyncio.gather(*(x.opened.wait() for x in opened)), 60)
    return opened, tasks


async def measure(port: int, service: local_services.Service, users: list[dict], groups: list[str], *,
                  listeners: int, rate: float, rest_rate: float, seconds: float, warmup: float,
                  heartbeat: float, rounds: int = 3) -> dict:
    """Run the phases against a serving API; return the figures.

    Without and with listeners alternate, `rounds` times, each `seconds / rounds`
    long, so drift on a noisy machine (a JIT warming up, a neighbour) lands on
    both sides of the REST ratio.
    """
    loop = asyncio.get_running_loop()
    length = seconds / rounds
    without, loaded = Phase(), Phase()
    deliveries = Deliveries()
    failed: list[str] = []
    still_open = 0
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        def phase(tag: str, duration: float = length):
            return loop.run_in_executor(child, functools.partial(
                load_in_child, port, users, groups, rate=rate, rest_rate=rest_rate, seconds=duration, tag=tag))

        await phase("warmup", warmup)
        ratios = []
        cpu_without = cpu_with = 0.0
        for n in range(rounds):
            if n:
                # The server notices closed streams when it next writes to them (a keep-alive, the second
                # fails): let it drop the last round's, so they do not weigh on this round's "without".
                await asyncio.sleep(2 * heartbeat + 2)
            cpu = server_cpu(service)
            alone = await phase(f"without{n}")
            cpu_without += server_cpu(service) - cpu
            _merge(without, alone)
            await asyncio.sleep(1.0)
            if n == 0:
                rss_before = server_rss(service)
            connect_started = time.monotonic()
            opened, tasks = await connect(port, users, listeners, deliveries)
            if n == 0:
                connect_seconds = time.monotonic() - connect_started
                await asyncio.sleep(3.0)  # idle
                rss_idle = server_rss(service)
            failed += [x.failed for x in opened if x.failed]
            cpu = server_cpu(service)
            crowded = await phase(f"with{n}")
            cpu_with += server_cpu(service) - cpu
            _merge(loaded, crowded)
            if alone.rest_ms and crowded.rest_ms:
                ratios.append(percentile(crowded.rest_ms, 99) / percentile(alone.rest_ms, 99))
            await asyncio.sleep(2.0)  # the last deliveries
            still_open += sum(1 for t in tasks if not t.done())
            for listener in opened:
                listener.close()
            await asyncio.gather(*tasks, return_exceptions=True)
    sent = {text: at for text, _, at in loaded.posted}
    latencies = [(when - sent[text]) * 1000 for text, when in deliveries.arrivals if text in sent]
    # Each message reaches the listeners of its sender and of its receiver (user k has listeners k, k+U, ...).
    per_user = [len(range(i, listeners, len(users))) for i in range(len(users))]
    expected = sum(per_user[2 * pair] + per_user[2 * pair + 1] for _, pair, _ in loaded.posted)
    rest_without, rest_with = percentile(without.rest_ms, 99), percentile(loaded.rest_ms, 99)
    return {
        "listeners": listeners, "rounds": rounds, "listeners_failed": len(failed),
        "listeners_open_at_end": still_open, "connect_seconds": round(connect_seconds, 1),
        "rate_per_s": rate, "rest_rate_per_s": rest_rate, "seconds": seconds,
        "messages_posted": len(loaded.posted), "deliveries": len(latencies), "deliveries_expected": expected,
        "post_to_event_p50_ms": round(percentile(latencies, 50), 1),
        "post_to_event_p99_ms": round(percentile(latencies, 99), 1),
        "post_to_event_max_ms": round(max(latencies, default=0.0), 1),
        "rest_p50_ms_without": round(percentile(without.rest_ms, 50), 2),
        "rest_p99_ms_without": round(rest_without, 2),
        "rest_p50_ms_with": round(percentile(loaded.rest_ms, 50), 2),
        "rest_p99_ms_with": round(rest_with, 2),
        "rest_p99_ratio": round(rest_with / rest_without, 2) if rest_without else None,
        # Each round's ratio compares neighbours in time; their median shrugs off one noisy stretch.
        "rest_p99_ratio_median_of_rounds": round(percentile(ratios, 50), 2),
        "post_p50_ms_without": round(percentile(without.post_ms, 50), 2),
        "post_p50_ms_with": round(percentile(loaded.post_ms, 50), 2),
        "rest_requests": [len(without.rest_ms), len(loaded.rest_ms)],
        "server_cpu_per_s_without": round(cpu_without / seconds, 3),
        "server_cpu_per_s_with": round(cpu_with / seconds, 3),
        "errors": {"without": without.errors, "with": loaded.errors},
        "server_rss_mib_before": round(rss_before / 2**20, 1), "server_rss_mib_idle": round(rss_idle / 2**20, 1),
        "kib_per_idle_stream": round((rss_idle - rss_before) / max(1, listeners) / 1024, 1),
    }


def _merge(total: Phase, part: Phase) -> None:
    total.rest_ms += part.rest_ms
    total.post_ms += part.post_ms
    total.posted += part.posted
    for what, count in part.errors.items():
        total.errors[what] = total.errors.get(what, 0) + count


def run(config: Config, workdir: Path, *, listeners: int = 1000, users: int = 100, rate: float = 10.0,
        rest_rate: float = 50.0, seconds: float = 60.0, warmup: float = 5.0, workers: int = 2,
        heartbeat: float | None = None) -> dict:
    """Serve the API against a running stack's config and measure; return the figures."""
    people = tusers.create_users(config, users, prefix="listener", password=PASSWORD)
    port = local_services.free_port()
    if heartbeat is not None:
        config = config.replace(events_heartbeat=heartbeat)
    service = local_services.start_api(child_env(config, LOG_LEVEL="WARNING"), port,
                                       log_path=workdir / "api-realtime.log", workers=workers)
    try:
        groups = []
        for k in range(users // 2):
            status, answer = asyncio.run(Connection(port).request(
                "POST", "/api/messages", people[2 * k]["token"],
                {"handle": people[2 * k + 1]["handle"], "message": "hello from the bench"}))
            assert status == 200, answer
            groups.append(json.loads(answer)["message_group_uuid"])
        return asyncio.run(measure(port, service, people, groups, listeners=listeners, rate=rate, rest_rate=rest_rate,
                                   seconds=seconds, warmup=warmup, heartbeat=config.events_heartbeat))
    finally:
        service.stop()


def report(result: dict) -> str:
    """The rows bench/run prints."""
    r = result
    return "\n".join([
        f"real-time: {r['listeners']} listeners ({r['listeners_failed']} failed, connected in "
        f"{r['connect_seconds']} s), {r['rate_per_s']:g} messages/s and {r['rest_rate_per_s']:g} REST calls/s, "
        f"{r['seconds']:g} s with and {r['seconds']:g} s without them in {r['rounds']} alternating rounds",
        f"  POST-to-event:            p50 {r['post_to_event_p50_ms']} ms, p99 {r['post_to_event_p99_ms']} ms, "
        f"max {r['post_to_event_max_ms']} ms over {r['deliveries']}/{r['deliveries_expected']} deliveries"
        "   (target p50 <= 100, p99 <= 500)",
        f"  REST p99 without / with:  {r['rest_p99_ms_without']} ms / {r['rest_p99_ms_with']} ms = "
        f"{r['rest_p99_ratio']}x pooled, {r['rest_p99_ratio_median_of_rounds']}x median of rounds   (target <= 1.5; "
        f"p50 {r['rest_p50_ms_without']} / {r['rest_p50_ms_with']} ms)",
        f"  server CPU without / with: {r['server_cpu_per_s_without']} / {r['server_cpu_per_s_with']} "
        "CPU-seconds per second",
        f"  memory per idle stream:   {r['kib_per_idle_stream']} KiB (server RSS {r['server_rss_mib_before']} -> "
        f"{r['server_rss_mib_idle']} MiB)",
        f"  errors:                   {r['errors']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run-realtime", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 listeners, 15 s phases (about a minute in all)")
    parser.add_argument("--listeners", type=int, help="connected streams (default 1000)")
    parser.add_argument("--seconds", type=float, help="length of each measured phase (default 60)")
    parser.add_argument("--rest-rate", type=float, help="REST calls per second (default 50)")
    parser.add_argument("--heartbeat", type=float, help="the server's EVENTS_HEARTBEAT (default: its own, 15 s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "realtime.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)   # a socket per listener, in this one process
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    options = {"listeners": 200, "users": 20, "seconds": 15.0} if args.quick else {}
    if args.listeners:
        options["listeners"] = args.listeners
    if args.seconds:
        options["seconds"] = args.seconds
    if args.heartbeat:
        options["heartbeat"] = args.heartbeat
    if args.rest_rate:
        options["rest_rate"] = args.rest_rate
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp, ephemeral_stack(Path(tmp)) as stack:
        result = run(stack.config, Path(tmp), **options)
    result["machine"] = {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                         "ram_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
