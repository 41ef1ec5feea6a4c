"""A small closed-loop HTTP load generator: N clients, keep-alive, bounded by count and time."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def summary(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 3), "rps": round(self.rps, 1),
                "p50_ms": round(self.pct(50), 2), "p99_ms": round(self.pct(99), 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def percentile(values: list[float], p: float) -> float:
    """Return the p-th percentile (nearest rank) of values, 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


Request = tuple[str, str, bytes | None, dict[str, str]]


def run_load(port: int, make_request: Callable[[int, int], Request], *, clients: int, requests: int,
             max_seconds: float, host: str = "127.0.0.1", warmup: int = 0) -> LoadResult:
    """Send `requests` requests from `clients` keep-alive connections; stop early after max_seconds.

    make_request(client_index, i) returns (method, path, body, headers).
    """
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests + warmup))
    deadline = time.monotonic() + max_seconds

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        local_lat: list[float] = []
        local_status: dict[int, int] = {}
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            method, path, body, headers = make_request(index, n)
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                status = 599
            elapsed = (time.perf_counter() - start) * 1000
            if n >= warmup:
                local_lat.append(elapsed)
                local_status[status] = local_status.get(status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(local_lat)
            for k, v in local_status.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 15)
    seconds = time.perf_counter() - start
    return LoadResult(len(latencies), seconds, latencies, statuses)


def json_body(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
