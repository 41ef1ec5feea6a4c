"""Session fixtures: real Postgres, DynamoDB Local and cognito-local on free loopback ports.

Nothing is mocked. Each service starts once per test session and stops at the
end; tests stay independent by using unique handles and group ids.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backend_flask.app import create_app
from backend_flask.config import ROOT, Config
from backend_flask.lib import db, ddb
from backend_flask.lib.aws import make_client
from toolbox import local_services
from toolbox import users as tusers
from toolbox.ephemeral import EphemeralStack, ephemeral_stack
from toolbox.settings import child_env, messages_table

TEST_PASSWORD = "Test-passw0rd!"


def _own_database(given: str) -> str:
    """On a Postgres server someone else runs, create a database of our own and return its URL."""
    name = f"cruddur_test_{os.getpid()}"
    with psycopg.connect(given, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(given)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[EphemeralStack]:
    """Start every backing service once for the session (Postgres from TEST_CONNECTION_URL if given)."""
    given = os.environ.get("TEST_CONNECTION_URL") or os.environ.get("CONNECTION_URL")
    url = _own_database(given) if given else None
    try:
        # Budgets long enough that only a hung backend uses them up: the suite must pass on a machine whose
        # cores are busy. tests/test_budget.py checks production's budgets with backends that hang.
        with ephemeral_stack(tmp_path_factory.mktemp("stack"), connection_url=url, frontend_url="http://localhost:3000",
                             request_budget=10.0, health_budget=5.0) as running:
            yield running
    finally:
        if given:
            with psycopg.connect(given, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "cruddur_test_{os.getpid()}" WITH (FORCE)')


@pytest.fixture(scope="session")
def config(stack: EphemeralStack) -> Config:
    """Settings that point at the session's services."""
    return stack.config


@pytest.fixture(scope="session")
def pg_url(config: Config) -> str:
    """A connection URL of the session's Postgres database (schema loaded)."""
    return config.connection_url


@pytest.fixture(scope="session")
def pool_db(pg_url: str) -> Iterator[db.Db]:
    """A Db over an open pool on the session database, as the app builds it."""
    pool = db.make_pool(pg_url, min_size=1, max_size=8, timeout=3.0)
    pool.open(wait=True, timeout=10)
    yield db.Db(pool)
    pool.close()


@pytest.fixture(scope="session")
def ddb_client(config: Config):
    """A DynamoDB client for the session's DynamoDB Local (table created)."""
    return messages_table(config).client


@pytest.fixture(scope="session")
def idp(config: Config):
    """A Cognito client for the session's cognito-local."""
    return make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url)


@pytest.fixture(scope="session")
def app(config: Config):
    """The Flask app, built once, talking to the session's services."""
    application = create_app(config)
    application.config["TESTING"] = True
    yield application
    from backend_flask import clients

    clients.close(application)


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def script_env(config: Config) -> dict[str, str]:
    """Environment for running bin/ scripts as subprocesses against the session's services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COGNITO_", "DDB_"))}
    env.update(config.as_env())
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="session")
def messages(config: Config, ddb_client) -> ddb.MessagesTable:
    """The session's messages table."""
    return ddb.MessagesTable(ddb_client, config.ddb_message_table)


@pytest.fixture
def make_user(config: Config, idp, pg_url: str):
    """Create a user in cognito-local and Postgres; return {uuid, handle, display_name, email, sub, token, headers}."""

    def _make(handle: str | None = None, display_name: str | None = None) -> dict:
        handle = handle or f"user{uuid.uuid4().hex[:10]}"
        display_name = display_name or f"User {handle}"
        user = tusers.create_signed_up_user(pg_url, idp, config.cognito_user_pool_id, config.cognito_client_id,
                                           handle=handle, display_name=display_name,
                                           email=f"{handle.lower()}@example.test", password=TEST_PASSWORD)
        return {**user, "headers": {"Authorization": f"Bearer {user['token']}"}}

    return _make


@pytest.fixture
def auth(make_user):
    """A fresh user and the Authorization header that carries their access token."""
    return make_user()


@pytest.fixture
def alice(auth):
    """A signed-in user."""
    return auth


@pytest.fixture
def bob(make_user):
    """A second signed-in user."""
    return make_user()


@pytest.fixture
def carol(make_user):
    """A third user, in nobody's conversation."""
    return make_user()


# --- API fixtures

COGNITO_LOCAL_KEY_FILE = ROOT / "node_modules" / "cognito-local" / "lib" / "keys" / "cognitoLocal.private.json"


@pytest.fixture(scope="session")
def pool_signing_key() -> dict:
    """The private JWK that cognito-local signs every token with (it ships in the npm package)."""
    import json

    return json.loads(COGNITO_LOCAL_KEY_FILE.read_text())["jwk"]


@pytest.fixture(scope="session")
def foreign_signing_key() -> str:
    """A PEM RSA private key that no user pool knows."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="session")
def forge(config: Config, pool_signing_key: dict):
    """Mint an RS256 token with chosen claims, signed by the pool's key unless `key` is given.

    forge(sub=..., exp=..., **claims) starts from a valid access token of the
    session's pool and app client; a claim set to None is left out.
    """
    import time

    from jose import jwt

    def _forge(*, key: dict | str | None = None, kid: str | None = None, **claims) -> str:
        now = int(time.time())
        body = {
            "sub": str(uuid.uuid4()), "iss": config.cognito_issuer, "client_id": config.cognito_client_id,
            "token_use": "access", "scope": "aws.cognito.signin.user.admin", "auth_time": now,
            "iat": now, "exp": now + 3600, "jti": str(uuid.uuid4()), "username": str(uuid.uuid4()),
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid or pool_signing_key["kid"]}
        return jwt.encode(body, key or pool_signing_key, algorithm="RS256", headers=headers)

    return _forge


@pytest.fixture
def sign_in(config: Config, idp):
    """Sign a make_user() user in with InitiateAuth; return the whole AuthenticationResult."""

    def _sign_in(user: dict) -> dict:
        return idp.initiate_auth(
            ClientId=config.cognito_client_id, AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": user["email"], "PASSWORD": TEST_PASSWORD},
        )["AuthenticationResult"]

    return _sign_in


@pytest.fixture(scope="session")
def bus(pg_url: str):
    """An event bus (lib/pubsub) of this process on the session's Postgres, with a pool of its own."""
    from backend_flask.lib.db import Db, make_pool
    from backend_flask.lib.pubsub import Bus

    pool = make_pool(pg_url, min_size=1, max_size=4)
    pool.open()
    running = Bus(Db(pool), pg_url)
    yield running
    running.close()
    pool.close()


# --- stream fixtures


@pytest.fixture(scope="session")
def stream_runner(config: Config):
    """The local stream runner (pattern E) following the session's table in a thread, as bin/dev runs it."""
    from toolbox import stream_runner as runner_module

    runner = runner_module.start_thread(config, idle_poll=0.1)
    yield runner
    runner.stop()


@pytest.fixture
def conversation(ddb_client, config: Config):
    """Start a conversation between two new people in the session's table (patterns C/D via lib/ddb).

    conversation(table=None) -> {"group", "a", "b", "first"}: a wrote `first` to b.
    """

    def _start(table: str | None = None) -> dict:
        a, b = ({"uuid": str(uuid.uuid4()), "handle": f"h{uuid.uuid4().hex[:8]}", "display_name": name}
                for name in ("Ann", "Bob"))
        first = ddb.MessagesTable(ddb_client, table or config.ddb_message_table).create_message_group(
            sender=a, receiver=b, message=f"hello {uuid.uuid4().hex[:6]}")
        return {"group": first["message_group_uuid"], "a": a, "b": b, "first": first}

    return _start


@pytest.fixture
def stream_record():
    """Build one DynamoDB Streams record in the shape Lambda passes it to a function.

    stream_record(event_name, item, sequence) where item is the plain item (pk, sk, ...); MODIFY
    and INSERT carry it as NewImage, REMOVE carries only the keys.
    """
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()

    def _record(event_name: str, item: dict, sequence: str) -> dict:
        image = {k: serializer.serialize(v) for k, v in item.items()}
        data = {"ApproximateCreationDateTime": 1764000000.0,
                "Keys": {"pk": image["pk"], "sk": image["sk"]},
                "SequenceNumber": sequence, "SizeBytes": 100, "StreamViewType": "NEW_IMAGE"}
        if event_name != "REMOVE":
            data["NewImage"] = image
        return {"eventID": uuid.uuid4().hex, "eventName": event_name, "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "ddblocal", "dynamodb": data,
                "eventSourceARN": "arn:aws:dynamodb:ddblocal:000000000000:table/cruddur-messages/stream/x"}

    return _record


# --- live server fixtures


class LiveAPI:
    """The API served by gunicorn, as deployed, on a free loopback port."""

    def __init__(self, service: local_services.Service):
        self.service = service
        self.port = service.port

    def request(self, method: str, path: str, *, token: str | None = None, body: dict | None = None,
                timeout: float = 15.0, conn=None) -> tuple[int, object, dict]:
        """Send one request; return (status, parsed JSON body or None, headers)."""
        import http.client
        import json

        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = raw
            return response.status, data, {k.lower(): v for k, v in response.getheaders()}
        finally:
            if own:
                conn.close()


def serve_api(config: Config, log_path: Path, **options) -> LiveAPI:
    """Start gunicorn serving the app with these settings."""
    env = child_env(config, LOG_LEVEL="WARNING")
    return LiveAPI(local_services.start_api(env, local_services.free_port(), log_path=log_path, **options))


@pytest.fixture(scope="session")
def live_api(config: Config, tmp_path_factory) -> Iterator[LiveAPI]:
    """gunicorn (2 workers) serving the app against the session's services."""
    api = serve_api(config, tmp_path_factory.mktemp("live") / "api.log")
    yield api
    api.service.stop()
