"""Per-process resources: Postgres pool, messages table, token verifier, user cache, event bus; built once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, current_app

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.cognito_jwt_token import TokenVerifier
from backend_flask.lib.db import Db, make_pool
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.errors import DatabaseUnavailable, DynamoDBUnavailable
from backend_flask.lib.health import Check, Health
from backend_flask.lib.pubsub import Bus
from backend_flask.lib.users import UserCache

log = logging.getLogger(__name__)


@dataclass
class Clients:
    """What a request needs to reach the backing services."""

    db: Db
    messages: MessagesTable
    verifier: TokenVerifier
    users: UserCache
    health: Health
    bus: Bus


def init_app(app: Flask, config: Config) -> None:
    """Create this process's resources (in each server worker, after fork; JWKS fetched lazily)."""
    pool = make_pool(config.connection_url, min_size=config.db_pool_min,
                     max_size=config.db_pool_max, timeout=config.db_timeout)
    # wait=False: the app starts even when Postgres is down; requests then get 503.
    pool.open(wait=False)
    # Each attempt's read timeout follows the request's budget; the connect timeout cannot, so it is no longer.
    ddb = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url,
                      timeout=min(config.ddb_timeout, config.request_budget), max_attempts=config.ddb_max_attempts)
    verifier = TokenVerifier(issuer=config.cognito_issuer, jwks_url=config.cognito_jwks_url,
                             client_id=config.cognito_client_id, refresh_interval=config.jwks_refresh_interval)
    db = Db(pool)
    messages = MessagesTable(ddb, config.ddb_message_table)
    checks = {"postgres": Check(db.ping, DatabaseUnavailable.code, seconds=config.health_budget,
                                ttl=config.health_cache_ttl),
              "dynamodb": Check(messages.ping, DynamoDBUnavailable.code, seconds=config.health_budget,
                                ttl=config.health_cache_ttl)}
    # The bus LISTENs on a connection of its own, opened by the first stream of this process.
    bus = Bus(db, config.connection_url, timeout=config.db_timeout)
    app.extensions["cruddur"] = Clients(db=db, messages=messages, verifier=verifier,
                                        users=UserCache(db, config.user_cache_ttl), health=Health(checks), bus=bus)


def get() -> Clients:
    """Return the current app's clients."""
    return current_app.extensions["cruddur"]


def close(app: Flask) -> None:
    """Close the pool and the bus (at process exit or when a test is done with the app)."""
    clients = app.extensions.get("cruddur")
    if clients is not None:
        clients.bus.close()
        clients.db.pool.close()
