"""The foundation: real services behind the fixtures, health, bootstrap scripts."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid

import psycopg

from backend_flask import clients
from backend_flask.app import create_app
from backend_flask.config import ROOT, Config
from backend_flask.lib.aws import make_client
from toolbox import local_services


def test_row_written_through_app_pool_reads_back_on_separate_connection(app, pg_url):
    # GIVEN a row written through the app's own Postgres pool
    handle = f"pool{uuid.uuid4().hex[:8]}"
    with app.app_context(), clients.get().db.pool.connection() as conn:
        conn.execute("INSERT INTO users (display_name, handle, email) VALUES (%s, %s, %s)",
                     ("Pool Test", handle, f"{handle}@example.test"))
    # WHEN a separate psycopg connection reads it
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT display_name FROM users WHERE handle = %s", (handle,)).fetchone()
    # THEN it is there
    assert row == ("Pool Test",)


def test_item_written_through_app_client_reads_back_with_separate_client(app, config):
    # GIVEN an item written through the app's DynamoDB client
    pk = f"TEST#{uuid.uuid4()}"
    with app.app_context():
        clients.get().messages.client.put_item(TableName=config.ddb_message_table,
                                   Item={"pk": {"S": pk}, "sk": {"S": "x"}, "v": {"S": "hello"}})
    # WHEN a separately built boto3 client reads it
    other = make_client("dynamodb", region="us-east-1", endpoint_url=config.aws_endpoint_url)
    item = other.get_item(TableName=config.ddb_message_table, Key={"pk": {"S": pk}, "sk": {"S": "x"}},
                          ConsistentRead=True)["Item"]
    # THEN it is the same item
    assert item["v"] == {"S": "hello"}


def test_health_is_200_when_postgres_and_dynamodb_answer(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "postgres": "ok", "dynamodb": "ok"}


def test_health_is_503_naming_dynamodb_when_it_is_down(config):
    # GIVEN an app whose DynamoDB endpoint has nothing listening
    dead = Config.from_env(environ={}, **{**config.__dict__, "aws_endpoint_url":
                                          f"http://127.0.0.1:{local_services.free_port()}"})
    app = create_app(dead)
    try:
        response = app.test_client().get("/api/health")
    finally:
        clients.close(app)
    # THEN it says which dependency is down
    assert response.status_code == 503
    assert response.json["dynamodb"] == "dynamodb_unavailable"
    assert response.json["postgres"] == "ok"


def test_health_is_503_naming_postgres_when_it_is_down(config):
    dead = Config.from_env(environ={}, **{**config.__dict__, "db_timeout": 1.0, "connection_url":
                                          f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/x"})
    app = create_app(dead)
    try:
        response = app.test_client().get("/api/health")
    finally:
        clients.close(app)
    assert response.status_code == 503
    assert response.json["postgres"] == "database_unavailable"
    assert response.json["dynamodb"] == "ok"


def test_bootstrap_names_the_missing_system_package(tmp_path):
    # GIVEN a PATH that has bash tools but no java
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "cat", "sed", "head", "sha256sum", "cut", "dirname", "python3", "node", "npm"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            os.symlink(found, bindir / tool)
    # WHEN bin/test runs
    result = subprocess.run([str(ROOT / "bin" / "test"), "--version"], capture_output=True, text=True,
                            env={"PATH": str(bindir), "HOME": str(tmp_path)}, timeout=30)
    # THEN it stops at once naming the Debian package
    assert result.returncode != 0
    assert "java" in result.stderr and "openjdk-17-jre-headless" in result.stderr


def test_ci_runs_bin_test():
    text = (ROOT / ".ci" / "run").read_text()
    assert "bin/test" in text
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_an_api_started_without_its_user_pool_says_so_as_an_error(config, caplog):
    # WHEN the app starts with an empty COGNITO_USER_POOL_ID
    with caplog.at_level(logging.INFO, logger="backend_flask.app"):
        app = create_app(config.replace(cognito_user_pool_id=""))
    clients.close(app)
    # THEN its first words are an error naming the setting and what it breaks
    [said] = [r for r in caplog.records if r.name == "backend_flask.app" and "not set" in r.getMessage()]
    assert said.levelno == logging.ERROR
    assert "COGNITO_USER_POOL_ID" in said.getMessage() and "every token is refused" in said.getMessage()
