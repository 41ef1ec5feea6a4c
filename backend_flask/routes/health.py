"""GET /api/health: liveness and readiness of Postgres and DynamoDB."""

from __future__ import annotations

from flask import Blueprint, jsonify

from backend_flask import clients
from backend_flask.errors import RETRY_AFTER_SECONDS

bp = Blueprint("health", __name__)


@bp.get("/api/health")
def health():
    """Report each dependency; 503 (with Retry-After) if any of them does not answer.

    Both are checked at once, each within HEALTH_BUDGET, and each result is
    reused for HEALTH_CACHE_TTL per process (lib/health).
    """
    report = clients.get().health.report()
    healthy = all(v == "ok" for v in report.values())
    response = jsonify({"status": "ok" if healthy else "unavailable", **report})
    if not healthy:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
