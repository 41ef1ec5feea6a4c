"""Per-process resources: the Postgres pool and the DynamoDB client, built once and reused."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.db import Db, make_pool

log = logging.getLogger(__name__)


@dataclass
class Clients:
    """What a request needs to reach the backing services."""

    db: Db
    ddb: Any
    table: str


def init_app(app: Flask, config: Config) -> None:
    """Create the pool and the client for this process (gunicorn: each worker, after fork)."""
    pool = make_pool(config.connection_url, min_size=config.db_pool_min,
                     max_size=config.db_pool_max, timeout=config.db_timeout)
    # wait=False: the app starts even when Postgres is down; requests then get 503.
    pool.open(wait=False)
    ddb = make_client("dynamodb", region=config.aws_region, endpoint_url=config.aws_endpoint_url,
                      timeout=config.ddb_timeout, max_attempts=config.ddb_max_attempts)
    app.extensions["cruddur"] = Clients(db=Db(pool), ddb=ddb, table=config.ddb_message_table)


def get() -> Clients:
    """Return the current app's clients."""
    return current_app.extensions["cruddur"]


def close(app: Flask) -> None:
    """Close the pool (at process exit or when a test is done with the app)."""
    clients = app.extensions.get("cruddur")
    if clients is not None:
        clients.db.pool.close()
