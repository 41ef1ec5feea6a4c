"""GET /api/health: liveness and readiness of Postgres and DynamoDB."""

from __future__ import annotations

from flask import Blueprint, jsonify

from backend_flask import clients
from backend_flask.lib import ddb
from backend_flask.lib.errors import DataError

bp = Blueprint("health", __name__)


@bp.get("/api/health")
def health():
    """Report each dependency; 503 if any of them does not answer."""
    c = clients.get()
    checks = {"postgres": c.db.ping, "dynamodb": lambda: ddb.ping(c.ddb, c.table)}
    report = {}
    for name, check in checks.items():
        try:
            check()
            report[name] = "ok"
        except DataError as exc:
            report[name] = exc.code
    healthy = all(v == "ok" for v in report.values())
    body = {"status": "ok" if healthy else "unavailable", **report}
    return jsonify(body), 200 if healthy else 503
