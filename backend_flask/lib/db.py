"""Postgres access: one connection pool per process and SQL templates from db/sql/.

Every unit of work borrows a connection with `with pool.connection()`.
Parameters are always bound (`%(name)s`), never formatted into SQL. A server
that cannot be reached raises DatabaseUnavailable within a few seconds, and
inside a request's budget (`lib/budget`) within what is left of it: the wait
for a connection, its checkout check and the query are each cut off then.
Creating, dropping and loading databases is local tooling: `toolbox.pg`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend_flask.lib import budget
from backend_flask.lib.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "db" / "sql"


def connect_kwargs(timeout: float) -> dict[str, Any]:
    """Connection options: bounded connect time, server-side statement timeout, dict rows."""
    return {
        # psycopg enforces at least 2 s, as libpq does.
        "connect_timeout": max(2, math.ceil(timeout)),
        "options": f"-c statement_timeout={int(timeout * 1000)}",
        # A host that vanishes (failover, partition) leaves sent data unacknowledged:
        # drop the connection after `timeout` instead of waiting for TCP's ~15 minutes.
        "tcp_user_timeout": max(1000, int(timeout * 1000)),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "application_name": "cruddur",
        "row_factory": dict_row,
        "autocommit": True,
    }


def make_pool(url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 3.0) -> ConnectionPool:
    """Return a pool that is not open yet: call pool.open() in the process that uses it."""
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs=connect_kwargs(timeout),
        # One cheap round trip on checkout, so a connection broken by a server
        # restart is replaced instead of failing the request.
        check=functools.partial(_check_connection, timeout=timeout),
        # While the server is down, retry in the background (with backoff) only
        # as long as a request would wait; then give up until the next request
        # asks for a connection, instead of hammering a dead server forever.
        reconnect_timeout=max(1.0, timeout),
        open=False,
        name="cruddur",
    )


class _Watchdog:
    """One thread that cuts the socket of a connection stuck past its deadline.

    statement_timeout stops slow queries, connect_timeout slow connects and
    tcp_user_timeout vanished hosts; none of them helps when the server's
    host is up but the server does not answer (frozen, swapping, stuck in
    I/O). Shutting the socket down makes libpq fail at once, and the pool then
    discards the broken connection.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[float, psycopg.Connection]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, conn: psycopg.Connection, seconds: float) -> Iterator[None]:
        """Cut conn's socket if the block is still running after `seconds`."""
        key = next(self._keys)
        deadline = time.monotonic() + seconds
        with self._cond:
            wake = not self._deadlines or deadline < min(d for d, _ in self._deadlines.values())
            self._deadlines[key] = (deadline, conn)
            # (Re)start lazily: a thread does not survive a fork (gunicorn workers).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cruddur-db-watchdog", daemon=True)
                self._thread.start()
            elif wake:
                self._cond.notify()
        try:
            yield
        finally:
            # Under the lock, so the socket is never cut after the block is over.
            with self._cond:
                self._deadlines.pop(key, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, (deadline, conn) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[key]
                        _cut(conn)
                nearest = min((d for d, _ in self._deadlines.values()), default=now + 60.0)
                self._cond.wait(max(0.01, nearest - now))


def _cut(conn: psycopg.Connection) -> None:
    """Shut down a connection's socket (the owning thread then sees it closed)."""
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return  # already closed
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    log.warning("cut off a Postgres connection that did not answer in time")


_WATCHDOG = _Watchdog()
# Past statement_timeout, give the server this long to report the cancel itself.
_GRACE = 1.0


# The checkout check gets at least this long, even at the end of a budget: a check cut
# short would throw away a healthy connection (the pool's own wait ends the request then).
_MIN_CHECK = 0.05


def _check_connection(conn: psycopg.Connection, timeout: float) -> None:
    """The pool's checkout check: one empty round trip, cut off after `timeout` or when the budget ends."""
    with _WATCHDOG.guard(conn, max(_MIN_CHECK, budget.bound(timeout))):
        ConnectionPool.check_connection(conn)


@functools.cache
def template(name: str) -> str:
    """Return the SQL of db/sql/<name>.sql, read once per process."""
    path = (SQL_DIR / f"{name}.sql").resolve()
    if SQL_DIR not in path.parents or not path.is_file():
        raise ValueError(f"no SQL template {name!r} in {SQL_DIR}")
    return path.read_text()


class _OneConnection:
    """A stand-in for a pool that always lends the same connection (scripts)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        yield self.conn


class Db:
    """Query helpers over a pool, in the spirit of the original bootcamp's."""

    def __init__(self, pool: ConnectionPool | _OneConnection, timeout: float | None = None):
        self.pool = pool
        # How long a query may take before its connection is cut (statement_timeout + grace).
        self.timeout = timeout if timeout is not None else getattr(pool, "timeout", None)

    @classmethod
    def on_connection(cls, conn: psycopg.Connection) -> Db:
        """Return helpers that run on one open connection (scripts, transactions)."""
        return cls(_OneConnection(conn))

    def _run(self, query: str, params: dict[str, Any] | None, fetch: str):
        try:
            with self._connection() as conn, self._guard(conn), conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params or {})
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return cur.rowcount
        except PoolTimeout as exc:
            raise DatabaseUnavailable(detail=f"no Postgres connection within the timeout: {one_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            # Connection lost, server shutting down, or statement_timeout hit.
            raise DatabaseUnavailable(detail=f"Postgres failed: {one_line(exc)}") from exc

    def _connection(self):
        """Borrow a connection, waiting no longer than the timeout or what is left of the budget."""
        wait = budget.remaining() if self.timeout is None else budget.bound(self.timeout)
        if wait is None:
            return self.pool.connection()
        if wait <= 0:
            raise DatabaseUnavailable(detail="the request's time budget is spent")
        return self.pool.connection(timeout=wait)

    def _guard(self, conn: psycopg.Connection):
        """Cut the connection if the query outlives statement_timeout (plus grace) or the budget."""
        limit = budget.remaining() if self.timeout is None else budget.bound(self.timeout + _GRACE)
        if limit is None:
            return contextlib.nullcontext()
        if limit <= 0:
            raise DatabaseUnavailable(detail="the request's time budget is spent")
        return _WATCHDOG.guard(conn, limit)

    def query_object(self, name: str, /, **params: Any) -> dict[str, Any] | None:
        """Run template `name` and return its first row as a dict, or None."""
        return self._run(template(name), params, "one")

    def query_array(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        """Run template `name` and return every row as a dict."""
        return self._run(template(name), params, "all")

    def query_value(self, name: str, /, **params: Any) -> Any:
        """Run template `name` and return the first column of its first row, or None."""
        row = self.query_object(name, **params)
        return next(iter(row.values())) if row else None

    def query_commit(self, name: str, /, **params: Any) -> int:
        """Run a writing template `name` and return the number of rows it touched."""
        return self._run(template(name), params, "none")

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless Postgres answers a trivial query."""
        self._run("SELECT 1", None, "one")


def redact(url: str) -> str:
    """Return where a connection URL leads, user@host:port/dbname, without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable connection URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host') or 'localhost'}{port}/{info.get('dbname') or ''}"


def one_line(exc: BaseException) -> str:
    """Return an exception's message on one line (libpq's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
