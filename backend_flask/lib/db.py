"""Postgres access: one connection pool per process and SQL templates from db/sql/.

Every unit of work borrows a connection with `with pool.connection()`.
Parameters are always bound (`%(name)s`), never formatted into SQL. A server
that cannot be reached raises DatabaseUnavailable within `timeout` seconds.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend_flask.lib.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "db" / "sql"
SCHEMA_FILE = ROOT / "db" / "schema.sql"
SEED_FILE = ROOT / "db" / "seed.sql"


def connect_kwargs(timeout: float) -> dict[str, Any]:
    """Connection options: bounded connect time, server-side statement timeout, dict rows."""
    return {
        "connect_timeout": max(1, int(timeout)),
        "options": f"-c statement_timeout={int(timeout * 1000)}",
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
        check=ConnectionPool.check_connection,
        reconnect_timeout=0,  # keep retrying in the background, forever
        open=False,
        name="cruddur",
    )


@functools.cache
def template(name: str) -> str:
    """Return the SQL of db/sql/<name>.sql, read once per process."""
    path = (SQL_DIR / f"{name}.sql").resolve()
    if SQL_DIR not in path.parents:
        raise ValueError(f"bad template name {name!r}")
    return path.read_text()


class Db:
    """Query helpers over a pool, in the spirit of the original bootcamp's."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def _run(self, sql: str, params: dict[str, Any] | None, fetch: str):
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(sql, params or {})
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return cur.rowcount
        except PoolTimeout as exc:
            raise DatabaseUnavailable(f"no Postgres connection: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"Postgres failed: {exc}") from exc

    def query_object(self, name: str, **params: Any) -> dict[str, Any] | None:
        """Run template `name` and return its first row as a dict, or None."""
        return self._run(template(name), params, "one")

    def query_array(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run template `name` and return every row as a dict."""
        return self._run(template(name), params, "all")

    def query_value(self, name: str, **params: Any) -> Any:
        """Run template `name` and return the first column of its first row, or None."""
        row = self.query_object(name, **params)
        return next(iter(row.values())) if row else None

    def query_commit(self, name: str, **params: Any) -> int:
        """Run a writing template `name` and return the number of rows it touched."""
        return self._run(template(name), params, "none")

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless Postgres answers a trivial query."""
        self._run("SELECT 1", None, "one")


def run_script(url: str, path: Path, timeout: float = 10.0) -> None:
    """Run a whole SQL file (schema, seed) on its own connection, in one transaction."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute(path.read_text())
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach Postgres at {redact(url)}: {exc}") from exc


def load_schema(url: str) -> None:
    """Create the tables if they are missing (safe to run again)."""
    run_script(url, SCHEMA_FILE)


def redact(url: str) -> str:
    """Return a connection URL with its password hidden, for messages and logs."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    if "password" in info:
        info["password"] = "***"
    return psycopg.conninfo.make_conninfo(**info)
