"""The Cruddur messaging backend: a Flask app factory."""

from __future__ import annotations

import atexit
import logging
import os

from flask import Flask

from backend_flask.config import Config

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Send log lines to stderr once per process, in one format."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    # botocore logs request details (headers included) at DEBUG; keep it quiet.
    logging.getLogger("botocore").setLevel(logging.WARNING)


def create_app(config: Config | None = None) -> Flask:
    """Build the app: config -> logging -> clients -> blueprints -> error handlers."""
    config = config or Config.from_env()
    configure_logging(config.log_level)

    app = Flask(__name__)
    app.config["CRUDDUR"] = config
    app.json.sort_keys = False

    from backend_flask import clients, errors, routes

    clients.init_app(app, config)
    routes.init_app(app, config)
    errors.init_app(app)
    log.info("app created (pid %s, table %s)", os.getpid(), config.ddb_message_table)
    atexit.register(clients.close, app)
    return app
