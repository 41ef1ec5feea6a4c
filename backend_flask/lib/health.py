"""Readiness checks of the backing services for /api/health: concurrent, bounded, cached.

Each check runs in a thread of its own under its own budget, so a hung
Postgres cannot delay DynamoDB's report nor the other way round, and the
report is ready within that budget (plus a little) whatever hangs. A result
is reused for `ttl` seconds per process, and while a check runs every caller
waits for that run instead of starting another: anonymous callers cannot turn
/api/health into a stream of queries against the backends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from backend_flask.lib import budget
from backend_flask.lib.errors import ServiceUnavailable

log = logging.getLogger(__name__)

OK = "ok"
# What a caller waits past the checks' budget for their threads to report.
REPORT_GRACE = 0.1


class _Run:
    """One run of a check: done once its result is in."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = ""


class Check:
    """One backend's check (a callable that raises ServiceUnavailable), run at most once at a time, cached."""

    def __init__(self, run: Callable[[], None], unavailable: str, *, seconds: float, ttl: float):
        self._check = run
        self.unavailable = unavailable      # what to report when the check raised something unexpected
        self.seconds = seconds
        self.ttl = ttl
        self._lock = threading.Lock()
        self._last: _Run | None = None
        self._expires = float("-inf")

    def begin(self) -> _Run:
        """Return a fresh cached run, the run in progress, or a new run started in a thread."""
        with self._lock:
            last = self._last
            if last is not None and (not last.done.is_set() or time.monotonic() < self._expires):
                return last
            run = self._last = _Run()
        threading.Thread(target=self._execute, args=(run,), name="cruddur-health", daemon=True).start()
        return run

    def _execute(self, run: _Run) -> None:
        with budget.within(self.seconds):
            try:
                self._check()
                run.result = OK
            except ServiceUnavailable as exc:
                run.result = exc.health_code
            except Exception:
                log.exception("health check failed unexpectedly")
                run.result = self.unavailable
        with self._lock:
            self._expires = time.monotonic() + self.ttl
        run.done.set()


class Health:
    """The checks /api/health reports, by name."""

    def __init__(self, checks: dict[str, Check]):
        self.checks = checks

    def report(self) -> dict[str, str]:
        """Return {name: "ok" or what failed}, within the slowest check's budget plus a little."""
        runs = {name: check.begin() for name, check in self.checks.items()}
        deadline = time.monotonic() + max(c.seconds for c in self.checks.values()) + REPORT_GRACE
        report = {}
        for name, run in runs.items():
            finished = run.done.wait(max(0.0, deadline - time.monotonic()))
            report[name] = run.result if finished else self.checks[name].unavailable
        return report
