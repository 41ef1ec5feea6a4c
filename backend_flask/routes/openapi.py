"""GET /api/openapi.yml: the API's description (public, like any API reference)."""

from __future__ import annotations

import functools

from flask import Blueprint, Response

from backend_flask.config import ROOT

bp = Blueprint("openapi", __name__)

OPENAPI_FILE = ROOT / "openapi.yml"


@functools.cache
def _spec() -> str:
    return OPENAPI_FILE.read_text()


@bp.get("/api/openapi.yml")
def openapi() -> Response:
    """Serve openapi.yml."""
    return Response(_spec(), mimetype="application/yaml")
