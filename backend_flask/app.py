"""The Flask app factory: config -> logging -> clients -> blueprints -> error handlers."""

from __future__ import annotations

import atexit
import logging
import os
import time

from flask import Flask, Response, g, request
from flask_cors import CORS

from backend_flask.config import Config
from backend_flask.lib import budget
from backend_flask.logs import configure_logging

log = logging.getLogger(__name__)
access_log = logging.getLogger("backend_flask.access")

MAX_BODY_BYTES = 64 * 1024   # a message is at most 1024 characters; anything far bigger is not ours
def init_cors(app: Flask, config: Config) -> None:
    """Allow the frontend (and the backend's own origin), nobody else, to call /api/ from a browser."""
    origins = [url.rstrip("/") for url in (config.frontend_url, config.backend_url) if url]
    CORS(app, resources={r"/api/*": {"origins": origins}},
         allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
         expose_headers=["Link", "Retry-After"], methods=["GET", "POST", "OPTIONS"],
         supports_credentials=False, max_age=600)


def init_request_log(app: Flask) -> None:
    """Log one JSON object per request: method, path, status, duration, user uuid (never a token)."""

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        if not access_log.isEnabledFor(logging.INFO):
            return response
        started = g.get("request_started")
        user = g.get("user")
        access_log.info("request", extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
            "user": user["uuid"] if user else None,
            "pid": os.getpid(),
        })
        return response


def init_budget(app: Flask, config: Config) -> None:
    """Give every request REQUEST_BUDGET seconds of waiting on backends (lib/budget); past it, a 503."""

    @app.before_request
    def _open() -> None:
        g.budget = budget.start(config.request_budget)

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        token = g.pop("budget", None)
        if token is not None:
            budget.end(token)


def warn_about_missing_settings(config: Config) -> None:
    """Say at start-up, as an error, which required settings are empty, instead of failing every request quietly."""
    missing = [name for name, value in (("CONNECTION_URL", config.connection_url),
                                        ("COGNITO_USER_POOL_ID", config.cognito_user_pool_id),
                                        ("COGNITO_CLIENT_ID", config.cognito_client_id)) if not value]
    if missing:
        log.error("settings not set: %s; the API starts, but every request that needs them fails (no pool: "
                  "every token is refused with 503 jwks_unavailable or 401)", ", ".join(missing),
                  extra={"missing_settings": missing})


def create_app(config: Config | None = None) -> Flask:
    """Build the app: config -> logging -> clients -> blueprints -> error handlers."""
    config = config or Config.from_env()
    configure_logging(config.log_level)
    warn_about_missing_settings(config)

    app = Flask("backend_flask", static_folder=None)
    app.config["CRUDDUR"] = config
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False

    from backend_flask import clients, errors, routes

    clients.init_app(app, config)
    init_cors(app, config)
    init_request_log(app)
    init_budget(app, config)
    routes.init_app(app, config)
    errors.init_app(app)
    log.info("app created (pid %s, table %s)", os.getpid(), config.ddb_message_table)
    atexit.register(clients.close, app)
    return app
