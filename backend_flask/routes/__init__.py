"""Blueprints, one per resource."""

from __future__ import annotations

from flask import Flask

from backend_flask.config import Config


def init_app(app: Flask, config: Config) -> None:
    """Register every blueprint."""
    from backend_flask.routes import events, health, message_groups, messages, openapi, users

    for module in (health, message_groups, messages, users, events, openapi):
        app.register_blueprint(module.bp)
