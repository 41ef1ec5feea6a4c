"""The API's HTTP server: prefork workers on gevent that slow clients cannot starve.

    python -m backend_flask.server [--bind 127.0.0.1:4567] [--workers N] [--app backend_flask.wsgi:app]

The master forks N workers and restarts one that dies. Each worker opens its
own listening socket with SO_REUSEPORT, so the kernel spreads connections
across workers (no accept lottery), builds its own app after the fork (pools
open in the process that uses them) and serves every connection in a
greenlet: 1,000 idle or streaming connections cost memory, not threads.

A worker reads the whole request before the app sees it, within deadlines:
the head (request line + headers) and the body each have a total time limit,
and the body a size limit, for Content-Length and chunked bodies alike. A
client that sends half a head, or a body at one byte a second, is answered
408 and cut off; the app gets a complete body in a BytesIO. Every error the
server answers itself is a JSON array of codes, like the API's own.

Settings come from the command line, else the environment (read by
`backend_flask.config.ServerConfig`): PORT, WEB_CONCURRENCY, LOG_LEVEL, SERVER_IDLE_TIMEOUT,
SERVER_HEAD_TIMEOUT, SERVER_BODY_TIMEOUT, SERVER_MAX_BODY_BYTES,
SERVER_MAX_CONNECTIONS, SERVER_GRACEFUL_TIMEOUT.
"""

from __future__ import annotations

# gevent must patch the standard library before anything imports socket,
# threading or ssl for its own use: psycopg picks its wait function and
# boto3/urllib3 their sockets at import time. Running `-m backend_flask.server`
# imports the package's __init__ (and with it Flask) first; Flask keeps no
# reference gevent cannot patch, which gevent checks (it warns otherwise), and
# everything that does I/O (the app, psycopg, boto3) is imported later, in
# the worker.
from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402  (imports after patch_all, on purpose)
import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.client import parse_headers

import gevent
import gevent.os
import gevent.socket as socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import Input, OldMessage, WSGIHandler, WSGIServer, _InvalidClientInput, format_date_time

from backend_flask.config import ServerConfig

log = logging.getLogger("backend_flask.server")  # not __main__ under `python -m`

MAX_REQUEST_LINE = 8192       # longer: 414
MAX_HEADER_LINE = 8192        # one header line longer than this: 431
MAX_HEADER_FIELDS = 100       # more header lines than this: 431
MAX_HEADER_BYTES = 32 * 1024  # all header lines together: 431
WRITE_ERROR_SECONDS = 1.0     # time to hand an error answer to a client that may not read
LINGER_SECONDS = 2.0          # after an error, read (and drop) what the client still sends, so
LINGER_BYTES = 1024 * 1024    # closing does not reset the connection before it read our answer
WORKER_BOOT_ERROR = 3         # a worker that cannot build the app or bind will not do better on restart
PARENT_CHECK_SECONDS = 1.0

ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "payload_too_large",
    414: "request_uri_too_long",
    431: "request_header_fields_too_large",
    500: "internal_error",
}


@dataclass(frozen=True)
class Settings:
    """What the server does; build with parse_settings()."""

    host: str = "127.0.0.1"
    port: int = 4567
    workers: int = 1
    app: str = "backend_flask.wsgi:app"
    idle_timeout: float = 75.0       # keep-alive: wait this long for the next request (ALB idle is 60 s)
    head_timeout: float = 10.0       # request line + headers, from their first byte
    body_timeout: float = 10.0       # the whole body
    max_body: int = 64 * 1024        # bigger bodies get 413, chunked or not
    max_connections: int = 4000      # per worker; past it the worker stops accepting until one closes
    graceful_timeout: float = 5.0    # on SIGTERM, in-flight requests get this long to finish
    log_level: str = "INFO"


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_bind(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) into host and port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    if not 0 < int(port) < 65536:
        # Every worker binds the address itself: port 0 would give each a different port.
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return host, int(port)


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the command line, falling back to the environment (ServerConfig), then defaults."""
    env = ServerConfig.from_env(environ)
    parser = argparse.ArgumentParser(prog="python -m backend_flask.server", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", type=parse_bind, default=("127.0.0.1", env.port),
                        help="HOST:PORT to listen on (default 127.0.0.1:$PORT, PORT default 4567)")
    parser.add_argument("--workers", type=int, default=env.web_concurrency or default_workers(),
                        help="worker processes (WEB_CONCURRENCY; default: one per CPU)")
    parser.add_argument("--app", default=Settings.app, help="WSGI app as module:attribute")
    parser.add_argument("--idle-timeout", type=float, default=env.server_idle_timeout,
                        help="seconds a keep-alive connection may wait for its next request")
    parser.add_argument("--head-timeout", type=float, default=env.server_head_timeout,
                        help="seconds to receive a request line and headers, from their first byte")
    parser.add_argument("--body-timeout", type=float, default=env.server_body_timeout,
                        help="seconds to receive a whole request body")
    parser.add_argument("--max-body", type=int, default=env.server_max_body_bytes,
                        help="largest request body in bytes (413 beyond)")
    parser.add_argument("--max-connections", type=int, default=env.server_max_connections,
                        help="open connections per worker")
    parser.add_argument("--graceful-timeout", type=float, default=env.server_graceful_timeout,
                        help="seconds in-flight requests get to finish after SIGTERM")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.max_connections < 1 or args.max_body < 0:
        parser.error("--workers and --max-connections must be positive, --max-body not negative")
    host, port = args.bind
    return Settings(host=host, port=port, workers=args.workers, app=args.app, idle_timeout=args.idle_timeout,
                    head_timeout=args.head_timeout, body_timeout=args.body_timeout, max_body=args.max_body,
                    max_connections=args.max_connections, graceful_timeout=args.graceful_timeout,
                    log_level=env.log_level)


# ------------------------------------------------------------------ handler

class Rejected(Exception):
    """A request the server answers itself with an error, then closes the connection."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Deadline(Exception):
    """A head or body deadline passed (raised by gevent.Timeout)."""


class _ClientGone(Exception):
    """The client closed the connection in the middle of a request."""


def error_bytes(status: int) -> bytes:
    """A complete HTTP response: the status and a JSON array with its code; the connection closes."""
    body = (json.dumps([ERROR_CODES[status]]) + "\n").encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Date: {format_date_time(time.time()).decode()}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class Handler(WSGIHandler):
    """One connection: read each request whole, within deadlines, then hand it to the app."""

    server: Server
    _body = b""

    def __init__(self, sock, address, server):
        super().__init__(sock, address, server)
        # pywsgi sends a response's head and body in two writes: with Nagle's algorithm on, the body
        # waits for the ACK of the head, which the client delays (~40 ms on Linux) for every response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A backstop for writes: no single send (e.g. to a client that stopped reading) waits longer.
        sock.settimeout(server.settings.idle_timeout)

    def handle_one_request(self):
        """Serve one request; True keeps the connection for the next one, None closes it."""
        settings = self.server.settings
        if self.rfile.closed or not self._await_request(settings.idle_timeout):
            return None
        started = time.monotonic()
        self.response_length = 0
        self.command = self.path = None  # so a rejected request is not logged as the previous one
        try:
            with gevent.Timeout(settings.head_timeout, _Deadline):
                self._read_head()
            with gevent.Timeout(settings.body_timeout, _Deadline):
                self._body = self._read_body(settings.max_body)
        except _Deadline:
            self._reject(408, started)
            return None
        except Rejected as rejected:
            self._reject(rejected.status, started)
            return None
        except _InvalidClientInput:  # a broken chunked body
            self._reject(400, started)
            return None
        except (_ClientGone, OSError):
            return None
        except ValueError:  # gevent's own parser: no method/path/version, bad Content-Length
            self._reject(400, started)
            return None
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        if self.close_connection or self.rfile.closed:
            return None
        return True

    def _await_request(self, idle_timeout: float) -> bool:
        """Wait for the first byte of the next request; False when the client or the server is done."""
        if self.server.stopping:
            return False
        self.server.idle.add(self)
        try:
            with gevent.Timeout(idle_timeout, False):
                return bool(self.rfile.peek(1))
            return False
        except OSError:
            return False
        finally:
            self.server.idle.discard(self)

    def wake_idle(self) -> None:
        """End the wait for a next request (the server is stopping): the connection closes."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RD)

    def _read_head(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_LINE)
        if not line.endswith(b"\n"):
            if len(line) >= MAX_REQUEST_LINE:
                raise Rejected(414)
            raise _ClientGone()
        self.requestline = line.decode("latin-1")
        self.read_request(self.requestline)  # parses headers through MessageClass below

    def MessageClass(self, fp, *args):  # noqa: N802  (gevent's name)
        """Read the header lines within the size limits, then parse them."""
        lines, total = [], 0
        while True:
            line = fp.readline(MAX_HEADER_LINE + 1)
            if not line.endswith(b"\n"):
                if len(line) > MAX_HEADER_LINE:
                    raise Rejected(431)
                raise _ClientGone()
            total += len(line)
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                break
            if len(lines) > MAX_HEADER_FIELDS or total > MAX_HEADER_BYTES:
                raise Rejected(431)
        headers = parse_headers(io.BytesIO(b"".join(lines)), _class=OldMessage)
        encoding = headers.get_all("Transfer-Encoding") or []
        lengths = headers.get_all("Content-Length") or []
        # Framing that the app and a proxy in front could read differently is refused (request smuggling).
        if encoding and ([e.strip().lower() for e in encoding] != ["chunked"] or lengths):
            raise Rejected(400)
        if len(set(lengths)) > 1 or not all(v.strip().isdigit() for v in lengths):
            raise Rejected(400)
        return headers

    def _read_body(self, max_body: int) -> bytes:
        expects_continue = self.headers.get("Expect", "").lower() == "100-continue"
        if self.headers.get("Transfer-Encoding"):
            reader = Input(self.rfile, None, socket=self.socket if expects_continue else None, chunked_input=True)
            body = reader.read(max_body + 1)
            if len(body) > max_body:
                raise Rejected(413)
            return body
        length = self.content_length or 0
        if length > max_body:
            raise Rejected(413)
        if not length:
            return b""
        if expects_continue:
            self.socket.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ClientGone()
        return body

    def get_environ(self):
        """The WSGI environ, with the body already read: a BytesIO and its exact length."""
        env = super().get_environ()
        env["wsgi.input"] = io.BytesIO(self._body)
        env["wsgi.input_terminated"] = True
        env["CONTENT_LENGTH"] = str(len(self._body))
        env.pop("HTTP_TRANSFER_ENCODING", None)
        # gevent discards an unread body after the response; there is none left to discard.
        self.wsgi_input = Input(self.rfile, 0)
        return env

    def finalize_headers(self):
        """Say `Connection: close` when this response is the connection's last."""
        super().finalize_headers()
        if self.server.stopping:
            self.close_connection = True
        if self.close_connection and self.request_version == "HTTP/1.1" and not any(
                name.lower() == b"connection" for name, _ in self.response_headers):
            self.response_headers.append((b"Connection", b"close"))

    def _reject(self, status: int, started: float) -> None:
        """Answer with a JSON error if the client can still take it, then close the connection."""
        log.info("rejected", extra={
            "method": self.command, "path": (self.path or "").split("?")[0][:200], "status": status,
            "ms": round((time.monotonic() - started) * 1000, 1), "client": self.client_address[0]})
        self.close_connection = True
        with contextlib.suppress(OSError, _Deadline):
            with gevent.Timeout(WRITE_ERROR_SECONDS, _Deadline):
                self.socket.sendall(error_bytes(status))
            self._linger()

    def _linger(self) -> None:
        # Closing a socket with unread input makes the kernel send a reset, which can destroy
        # our answer before the client reads it: read and drop its input for a short while first.
        self.socket.shutdown(socket.SHUT_WR)
        dropped = 0
        with gevent.Timeout(LINGER_SECONDS, False):
            while dropped < LINGER_BYTES:
                data = self.socket.recv(65536)
                if not data:
                    break
                dropped += len(data)

    def _send_error_response_if_possible(self, error_code):
        # gevent's own 400/500 answers (an app error, a broken response) in the API's JSON shape.
        if self.headers_sent or self.response_length:
            self.close_connection = True
            return
        body = (json.dumps([ERROR_CODES.get(error_code, "internal_error")]) + "\n").encode()
        try:
            self.start_response(f"{error_code} {HTTPStatus(error_code).phrase}", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")])
            self.write(body)
        except OSError:
            self.close_connection = True

    def handle_error(self, t, v, tb):
        """An exception escaped the app: log it and answer 500 if nothing was sent yet."""
        if not issubclass(t, gevent.GreenletExit):
            log.error("unhandled error serving %s %s", self.command, self.path, exc_info=(t, v, tb))
        self._send_error_response_if_possible(500)


class Server(WSGIServer):
    """A WSGI server whose connections are greenlets in a bounded pool."""

    handler_class = Handler

    def __init__(self, listener, application, settings: Settings):
        super().__init__(listener, application, spawn=Pool(settings.max_connections),
                         log=None,  # the app logs one JSON line per request itself
                         error_log=logging.getLogger("backend_flask.server.errors"),
                         environ={"SERVER_NAME": settings.host, "SERVER_PORT": str(settings.port)})
        self.settings = settings
        self.stopping = False
        self.idle: set[Handler] = set()

    def graceful_stop(self, timeout: float) -> None:
        """Stop accepting, close idle connections, give in-flight requests `timeout` seconds."""
        self.stopping = True
        self.close()
        for handler in list(self.idle):
            handler.wake_idle()
        self.pool.join(timeout=timeout)
        if self.pool:
            log.warning("worker %d: %d connections still busy after %.1fs, closing them",
                        os.getpid(), len(self.pool), timeout)
            self.pool.kill(block=True, timeout=1)


# ------------------------------------------------------------------ processes

def load_app(spec: str) -> Callable:
    """Import module:attribute and return the WSGI callable."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "app")


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket that other processes of this user may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def check_address_free(host: str, port: int) -> None:
    """Fail if something already listens on host:port (SO_REUSEPORT would silently share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        probe.bind((host, port))


def raise_open_files_limit(wanted: int) -> None:
    """Let each worker hold max_connections sockets (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open files limited to %d: fewer than %d connections per worker fit", target, wanted)


class Worker:
    """A forked process serving the app on its own SO_REUSEPORT socket until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, master_pid: int):
        self.settings = settings
        self.master_pid = master_pid
        self.stop = Event()

    def run(self) -> int:
        settings = self.settings
        handlers = [gevent.signal_handler(s, self.stop.set) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            app = load_app(settings.app)
            warn_if_psycopg_blocks()
            listener = listen(settings.host, settings.port)
        except Exception:
            log.exception("worker %d could not start", os.getpid())
            return WORKER_BOOT_ERROR
        server = Server(listener, app, settings)
        server.start()
        log.info("worker %d listening on %s:%d", os.getpid(), settings.host, settings.port)
        gevent.spawn(self._follow_master)
        self.stop.wait()
        server.graceful_stop(settings.graceful_timeout)
        for handler in handlers:
            handler.cancel()
        log.info("worker %d stopped", os.getpid())
        return 0

    def _follow_master(self) -> None:
        # A master killed outright (SIGKILL, OOM) must not leave workers serving on their own.
        while not self.stop.is_set():
            if os.getppid() != self.master_pid:
                log.warning("worker %d: master %d is gone, stopping", os.getpid(), self.master_pid)
                self.stop.set()
            gevent.sleep(PARENT_CHECK_SECONDS)


def warn_if_psycopg_blocks() -> None:
    """psycopg picks its wait function at import: imported before patching, every query blocks the worker."""
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait_c", None) is waiting.wait:
        log.warning("psycopg was imported before gevent patched the standard library: queries block the worker")


class Master:
    """Fork the workers, restart one that dies (with backoff), stop them all on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.workers: dict[int, float] = {}          # pid -> when it started
        self.exited: list[tuple[int, int]] = []      # (pid, wait status) not handled yet
        self.wake = Event()
        self.stopping = False
        self.failures = 0                            # workers in a row that died soon after starting
        self.next_spawn = 0.0

    def run(self) -> int:
        """Serve until told to stop; in a forked worker, return the worker's exit code instead."""
        settings = self.settings
        try:
            check_address_free(settings.host, settings.port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
            return 1
        raise_open_files_limit(settings.max_connections + 256)
        handlers = [gevent.signal_handler(s, self._on_signal, s) for s in (signal.SIGTERM, signal.SIGINT)]
        log.info("master %d serving %s on http://%s:%d with %d workers", os.getpid(), settings.app,
                 settings.host, settings.port, settings.workers)
        code = 0
        while not self.stopping:
            while len(self.workers) < settings.workers and time.monotonic() >= self.next_spawn:
                pid = gevent.os.fork_and_watch(callback=self._on_exit)
                if pid == 0:
                    for handler in handlers:
                        handler.cancel()
                    return Worker(settings, os.getppid()).run()
                self.workers[pid] = time.monotonic()
            # Always a timeout: a wait on nothing but signal and child watchers would end gevent's loop.
            missing = len(self.workers) < settings.workers
            self.wake.wait(timeout=max(0.05, self.next_spawn - time.monotonic()) if missing else 1.0)
            self.wake.clear()
            if self._reap():
                log.error("a worker could not start; stopping")
                self.stopping, code = True, 1
        self._stop_workers()
        log.info("master %d stopped", os.getpid())
        return code

    def _on_signal(self, signum: int) -> None:
        if not self.stopping:
            log.info("master %d: %s, stopping gracefully", os.getpid(), signal.Signals(signum).name)
        self.stopping = True
        self.wake.set()

    def _on_exit(self, watcher) -> None:
        self.exited.append((watcher.pid, watcher.rstatus))
        self.wake.set()

    def _reap(self) -> bool:
        """Forget workers that exited, schedule their replacement; True if one could not boot."""
        boot_error = False
        while self.exited:
            pid, status = self.exited.pop(0)
            started = self.workers.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == WORKER_BOOT_ERROR:
                boot_error = True
                continue
            log.warning("worker %d exited (%s); starting another", pid,
                        f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}")
            now = time.monotonic()
            self.failures = self.failures + 1 if started is not None and now - started < 5.0 else 0
            # A crash loop restarts ever more slowly: 0.1 s, 0.2 s, ... at most 10 s apart.
            self.next_spawn = now + (min(10.0, 0.1 * 2 ** (self.failures - 1)) if self.failures else 0.0)
        return boot_error

    def _stop_workers(self) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.graceful_timeout + 5.0
        while self.workers and time.monotonic() < deadline:
            self.wake.wait(timeout=0.2)
            self.wake.clear()
            self._reap()
        for pid in self.workers:
            log.warning("worker %d did not stop in time: killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            self.wake.wait(timeout=0.2)
            self.wake.clear()
            self._reap()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; return the exit code (of the master, or of a worker in a worker process)."""
    settings = parse_settings(argv)
    from backend_flask.logs import configure_logging

    configure_logging(settings.log_level)
    return Master(settings).run()


if __name__ == "__main__":
    sys.exit(main())
