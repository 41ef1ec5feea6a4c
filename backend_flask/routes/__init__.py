"""Blueprints, one per resource."""

from __future__ import annotations

from flask import Flask

from backend_flask.config import Config


def init_app(app: Flask, config: Config) -> None:
    """Register every blueprint."""
    from backend_flask.routes import health

    app.register_blueprint(health.bp)
