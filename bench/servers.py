"""The servers the bench compares, started on free loopback ports, with their CPU and per-worker counts readable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from backend_flask.config import Config
from toolbox import local_services
from toolbox.settings import child_env

API_APP = "backend_flask.wsgi:app"
BASELINE_APP = "bench.baseline_app:app"


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration: which app, on which server, with how many workers."""

    key: str
    label: str
    app: str
    server: str          # "gevent": backend_flask.server (prefork); "gthread": gunicorn gthread
    workers: int = 2
    threads: int = 8     # gthread only


SERVERS = [
    ServerSpec("api", "API on backend_flask.server (gevent prefork, 2 workers)", API_APP, "gevent"),
    ServerSpec("api-gthread", "API on gunicorn gthread 2x8", API_APP, "gthread"),
    ServerSpec("baseline", "original bootcamp code on gunicorn gthread 2x8", BASELINE_APP, "gthread"),
]


class RunningServer:
    """A server of a spec serving on a free loopback port, as deployed (LOG_LEVEL=INFO: one JSON line per request)."""

    def __init__(self, spec: ServerSpec, config: Config, workdir: Path, *, profile_dir: Path | None = None):
        self.spec = spec
        self.port = local_services.free_port()
        self.log_path = workdir / f"server-{spec.key}{'-profiled' if profile_dir else ''}.log"
        env = child_env(config, LOG_LEVEL="INFO")
        if profile_dir is None:
            self.service = local_services.start_api(env, self.port, log_path=self.log_path, server=spec.server,
                                                    workers=spec.workers, threads=spec.threads, app=spec.app)
        else:
            self.service = _start_profiled(spec, env, self.port, self.log_path, profile_dir)

    def processes(self) -> list[psutil.Process]:
        """The master and every process below it."""
        try:
            master = psutil.Process(self.service.process.pid)
            return [master, *master.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> dict[int, float]:
        """CPU time (user + system) used so far by each process of the server, master included."""
        used = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used[proc.pid] = times.user + times.system
        return used

    def log_offset(self) -> int:
        """Where the server's log ends now (to read only what a load adds)."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def requests_per_worker(self, since: int) -> dict[int, int]:
        """Requests per worker pid, from the app's JSON access lines written after offset `since`."""
        counts: Counter[int] = Counter()
        with open(self.log_path, "rb") as log:
            log.seek(since)
            for line in log:
                if b'"backend_flask.access"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    counts[json.loads(line)["pid"]] += 1
        return dict(counts)

    def stop(self) -> None:
        self.service.stop()


def start_all(specs: list[ServerSpec], config: Config, workdir: Path) -> list[RunningServer]:
    """Start a server per spec, side by side; if one fails, stop the others and raise."""
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [pool.submit(RunningServer, spec, config, workdir) for spec in specs]
    started = [f.result() for f in futures if f.exception() is None]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        for server in started:
            server.stop()
        raise failed
    return started


def _start_profiled(spec: ServerSpec, env: dict, port: int, log_path: Path, profile_dir: Path):
    """Start bench.profiled_server: the same server and arguments, with the CPU sampler in each worker."""
    command = local_services.api_command(port, server=spec.server, workers=spec.workers, app=spec.app)
    module = command.index("backend_flask.server")
    command[module] = "bench.profiled_server"
    service = local_services.spawn(f"api-profiled-{spec.key}", command, log_path, port, cwd=local_services.ROOT,
                                   env={**env, "BENCH_PROFILE_DIR": str(profile_dir)})
    service.wait_ready(lambda: local_services.port_open(port), timeout=30)
    return service


def cpu_delta(before: dict[int, float], after: dict[int, float], master: int) -> dict:
    """CPU seconds between two readings: in total, of the master, and per worker."""
    workers = {pid: after[pid] - before.get(pid, 0.0) for pid in after if pid != master}
    master_s = after.get(master, 0.0) - before.get(master, 0.0)
    return {"total": master_s + sum(workers.values()), "master": master_s, "workers": workers}


def signal_workers(server: RunningServer, signum: int, profile_dir: Path, kind: str, timeout: float = 10.0) -> list:
    """Send a signal to each worker of a profiled server and wait for each one's answer file; return them."""
    workers = [p.pid for p in server.processes()[1:]]
    for pid in workers:
        with contextlib.suppress(FileNotFoundError):
            (profile_dir / f"{kind}-{pid}.json").unlink()
        os.kill(pid, signum)
    answers, deadline = [], time.monotonic() + timeout
    for pid in workers:
        path = profile_dir / f"{kind}-{pid}.json"
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if path.exists():
            answers.append(json.loads(path.read_text()))
    return answers


RESET, DUMP = signal.SIGUSR1, signal.SIGUSR2
