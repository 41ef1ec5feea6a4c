"""bin/db/* run as subprocesses against databases of their own on the session's Postgres server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from backend_flask.config import ROOT
from toolbox import cognito, local_services, pg, seed
from toolbox import users as tusers
from toolbox.settings import messages_table

PASSWORD = "Test-passw0rd!"


def run_bin(script: str, *args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run bin/<script> and return the finished process (text output)."""
    return subprocess.run([str(ROOT / "bin" / script), *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """The script failed with exit 1 and one `error:` line, no traceback."""
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.fixture
def own_url(pg_url: str) -> Iterator[str]:
    """A URL naming a database that does not exist yet on the session server; dropped afterwards."""
    url = pg.with_database(pg_url, f"cruddur_bin_{uuid.uuid4().hex[:12]}")
    yield url
    pg.drop_database(url, force=True)


@pytest.fixture
def env(script_env: dict[str, str], own_url: str) -> dict[str, str]:
    """Script environment whose CONNECTION_URL is this test's own database."""
    return {**script_env, "CONNECTION_URL": own_url, "PROD_CONNECTION_URL": ""}


@pytest.fixture
def loaded_url(own_url: str) -> str:
    """This test's own database, created with the schema loaded."""
    pg.create_database(own_url)
    pg.load_schema(own_url)
    return own_url


def handles(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT handle, cognito_user_id FROM public.users ORDER BY handle").fetchall())


def test_create_and_drop_make_and_remove_the_database_once(env, own_url):
    name = pg.database_name(own_url)
    created = run_bin("db/create", env=env)
    assert created.returncode == 0 and created.stdout == f"created database {name}\n", created
    assert pg.database_exists(own_url)
    again = run_bin("db/create", env=env)
    assert again.returncode == 0 and "already exists" in again.stdout
    dropped = run_bin("db/drop", env=env)
    assert dropped.returncode == 0 and dropped.stdout == f"dropped database {name}\n", dropped
    assert not pg.database_exists(own_url)
    assert run_bin("db/drop", env=env).stdout == f"database {name} does not exist\n"


def test_drop_of_a_database_in_use_fails_in_one_line_unless_forced(env, loaded_url):
    with psycopg.connect(loaded_url):
        assert_one_line_error(run_bin("db/drop", env=env), "in use", "--force")
        assert pg.database_exists(loaded_url)
        assert run_bin("db/drop", "--force", env=env).returncode == 0
    assert not pg.database_exists(loaded_url)


def test_schema_load_twice_then_seed_creates_the_demo_users(env, own_url):
    pg.create_database(own_url)
    for _ in range(2):
        result = run_bin("db/schema-load", env=env)
        assert result.returncode == 0 and "db/schema.sql" in result.stdout, result
    seeded = run_bin("db/seed", env=env)
    assert seeded.returncode == 0 and seeded.stdout.rstrip().endswith(": inserted 3 users"), seeded
    assert list(handles(own_url)) == ["andrewbrown", "bayko", "londo"]
    # AND a second seed says it inserted none, rather than "3 users"
    again = run_bin("db/seed", env=env)
    assert again.returncode == 0 and again.stdout.rstrip().endswith(": inserted 0 users (3 were there already)"), again


def test_prod_argument_targets_prod_connection_url(env, loaded_url):
    # GIVEN CONNECTION_URL pointing nowhere and PROD_CONNECTION_URL at the test's database
    prod_env = {**env, "CONNECTION_URL": f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/x",
                "PROD_CONNECTION_URL": loaded_url}
    # WHEN seed runs with `prod`
    result = run_bin("db/seed", "prod", env=prod_env)
    # THEN it seeded the prod database
    assert result.returncode == 0, result
    assert len(handles(loaded_url)) == 3


def test_prod_without_prod_connection_url_is_a_one_line_error(env):
    assert_one_line_error(run_bin("db/schema-load", "prod", env=env), "PROD_CONNECTION_URL")


def test_unreachable_server_is_a_quick_one_line_error(env):
    dead = {**env, "CONNECTION_URL": f"postgresql://postgres:hunter2@127.0.0.1:{local_services.free_port()}/x"}
    started = time.monotonic()
    result = run_bin("db/schema-load", env=dead)
    assert time.monotonic() - started < 10
    assert_one_line_error(result, "127.0.0.1")
    assert "hunter2" not in result.stderr


def test_setup_recreates_seeds_and_links_cognito_users(env, own_url, idp, config):
    # GIVEN andrewbrown signed up in the user pool, and a stale database with a leftover row
    sub = cognito.sign_up(idp, config.cognito_user_pool_id, config.cognito_client_id,
                          email="andrew@exampro.co", password=PASSWORD, handle="andrewbrown",
                          display_name="Andrew Brown")
    pg.create_database(own_url)
    pg.load_schema(own_url)
    with psycopg.connect(own_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (display_name, handle, email) VALUES ('Old', 'leftover', 'old@x.test')")
    # WHEN setup runs
    result = run_bin("db/setup", env=env)
    # THEN the database holds exactly the demo users, andrewbrown linked to his sub
    assert result.returncode == 0, result
    # (other tests may have signed up bayko or londo in the shared pool too)
    in_pool = tusers.pool_users_by_handle(idp, config.cognito_user_pool_id)
    assert handles(own_url) == {"andrewbrown": sub, "bayko": in_pool.get("bayko"), "londo": in_pool.get("londo")}
    assert f"andrewbrown: (none) -> {sub}" in result.stdout
    assert "leftover" not in result.stdout
    if "bayko" not in in_pool:
        assert "no Cognito user for: bayko" in result.stdout


def test_setup_on_a_database_in_use_needs_force(env, loaded_url):
    with psycopg.connect(loaded_url):
        assert_one_line_error(run_bin("db/setup", env=env), "in use")
        assert run_bin("db/setup", "--force", env=env).returncode == 0
    assert len(handles(loaded_url)) == 3


def test_update_cognito_user_ids_prints_changes_and_lists_unmatched_users(env, loaded_url, idp, config):
    tag = uuid.uuid4().hex[:8]
    sub = cognito.sign_up(idp, config.cognito_user_pool_id, config.cognito_client_id,
                          email=f"link{tag}@example.test", password=PASSWORD, handle=f"link{tag}",
                          display_name="Link")
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        for handle in (f"Link{tag}", f"lonely{tag}"):
            conn.execute("INSERT INTO users (display_name, handle, email) VALUES (%s, %s, %s)",
                         (handle, handle, f"{handle}@x.test"))
    result = run_bin("db/update_cognito_user_ids", env=env)
    assert result.returncode == 0, result
    assert f"Link{tag}: (none) -> {sub}" in result.stdout
    assert f"no Cognito user for: lonely{tag}" in result.stdout
    assert handles(loaded_url) == {f"Link{tag}": sub, f"lonely{tag}": None}


def test_update_cognito_user_ids_without_a_pool_id_is_a_one_line_error(env, loaded_url):
    assert_one_line_error(run_bin("db/update_cognito_user_ids", env={**env, "COGNITO_USER_POOL_ID": ""}),
                          "COGNITO_USER_POOL_ID")


def test_connect_opens_psql_on_the_database(env, loaded_url):
    result = run_bin("db/connect", "--", "-tA", "-c", "SELECT current_database()", env=env)
    assert result.returncode == 0, result
    assert result.stdout.strip() == pg.database_name(loaded_url)


@pytest.mark.parametrize("words", [[], ["local"], ["--"], ["local", "--"]])
def test_connect_passes_psql_arguments_through(env, loaded_url, words):
    # WHEN connect gets psql's own options, with or without a target and a `--`
    result = run_bin("db/connect", *words, "-tA", "-c", "SELECT current_database()", env=env)
    # THEN psql ran them on the database (no "invalid choice" from our argument parser)
    assert result.returncode == 0, result
    assert result.stdout.strip() == pg.database_name(loaded_url)


def test_connect_uses_the_embedded_psql_when_the_system_has_none(env, loaded_url, tmp_path):
    # GIVEN a PATH with bash and dirname only (what the shims need), no psql
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool), tmp_path / tool)
    # WHEN connect reads SQL from stdin
    result = run_bin("db/connect", env={**env, "PATH": str(tmp_path)}, stdin="SELECT 'from-' || 'psql';\n")
    # THEN psql ran it
    assert result.returncode == 0, result
    assert "from-psql" in result.stdout


def test_sessions_lists_who_is_connected(env, loaded_url):
    app_name = f"sessions-test-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(loaded_url, application_name=app_name):
        result = run_bin("db/sessions", env=env)
    assert result.returncode == 0, result
    header = result.stdout.splitlines()[0]
    assert [c.strip() for c in header.split("|")] == ["process_id", "user", "db", "client_addr", "app", "state",
                                                      "connected_for"]
    line = next(ln for ln in result.stdout.splitlines() if app_name in ln)
    assert pg.database_name(loaded_url) in line


@pytest.fixture
def own_table(env, config) -> Iterator[dict[str, str]]:
    """The script environment with a messages table of this test only (created, deleted afterwards)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    table = messages_table(config.replace(ddb_message_table=name))
    table.create()
    yield {**env, "DDB_MESSAGE_TABLE": name}
    table.delete()


def user_uuids(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT handle, uuid::text FROM public.users").fetchall())


def test_demo_users_keep_their_uuids_and_conversations_across_setups(own_table, own_url, config):
    # GIVEN a database set up from scratch, and the demo conversation of two seed users in the table
    assert run_bin("db/setup", env=own_table).returncode == 0
    first = user_uuids(own_url)
    assert set(first.values()) == tusers.seed_user_uuids()
    table = messages_table(config.replace(ddb_message_table=own_table["DDB_MESSAGE_TABLE"]))
    andrew, bayko = seed.users_by_handle(own_url, ["andrewbrown", "bayko"])
    group = seed.write_demo_conversation(table, andrew, bayko)
    # WHEN the database is set up again
    again = run_bin("db/setup", env=own_table)
    # THEN nothing was orphaned: the same uuids, and the conversation is still theirs
    assert again.returncode == 0, again.stderr
    assert user_uuids(own_url) == first
    assert [g["uuid"] for g in table.list_message_groups(first["andrewbrown"])["items"]] == [group]


def test_setup_refuses_to_orphan_conversations_of_users_the_seed_does_not_bring_back(own_table, loaded_url, config):
    # GIVEN a database with a user of its own who has a conversation in the table
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        mine = conn.execute("INSERT INTO users (display_name, handle, email) VALUES ('Mine', 'mine', 'mine@x.test') "
                            "RETURNING uuid::text").fetchone()[0]
    table = messages_table(config.replace(ddb_message_table=own_table["DDB_MESSAGE_TABLE"]))
    other = {"uuid": str(uuid.uuid4()), "handle": "other", "display_name": "Other"}
    table.create_message_group(sender={"uuid": mine, "handle": "mine", "display_name": "Mine"}, receiver=other,
                               message="keep me")
    # WHEN setup runs without --force
    refused = run_bin("db/setup", env=own_table)
    # THEN it refuses in one line naming the user, and the database is untouched
    assert_one_line_error(refused, "orphan", "mine", "--force")
    assert user_uuids(loaded_url) == {"mine": mine}
    # AND with --force it resets anyway
    forced = run_bin("db/setup", "--force", env=own_table)
    assert forced.returncode == 0, forced.stderr
    assert "mine" not in user_uuids(loaded_url)


def test_setup_says_so_when_it_cannot_check_the_table(env, loaded_url):
    # GIVEN a user of the database's own, and no DynamoDB where the table should be
    with psycopg.connect(loaded_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (display_name, handle, email) VALUES ('Mine', 'mine', 'mine@x.test')")
    unreachable = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{local_services.free_port()}"}
    # WHEN setup runs
    result = run_bin("db/setup", env=unreachable)
    # THEN it resets, and warns that it could not look for conversations it would orphan
    assert result.returncode == 0, result.stderr
    assert "warning: could not check" in result.stdout
