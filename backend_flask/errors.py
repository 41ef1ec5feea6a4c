"""Turn every error into the JSON array of codes the frontend renders.

The error family itself lives in `backend_flask.lib.errors`, shared by data
access, services and routes. Here it meets HTTP: one handler for the family,
one for what Werkzeug raises (405, 413, ...), and a 500 for anything else,
which is a bug.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from backend_flask.lib.errors import Error, ServiceUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1


def error_response(codes: list[str], status: int) -> Response:
    """Return the JSON array of codes with a status, plus the headers that status calls for."""
    response = jsonify(codes)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cruddur"'
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# Where Werkzeug's name differs from what backend_flask.server answers for the same status: one code either way.
HTTP_CODES = {413: "payload_too_large"}


def http_error_code(err: HTTPException) -> str:
    """Return the code of an HTTP error: its name in snake case ("method_not_allowed")."""
    return HTTP_CODES.get(err.code or 500) or (err.name or "error").lower().replace(" ", "_").replace("-", "_")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""

    @app.errorhandler(Error)
    def _error(err: Error):
        if isinstance(err, ServiceUnavailable):
            log.warning("backing service unavailable: %s", err)
        return error_response(err.codes, err.status)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        response = error_response([http_error_code(err)], err.code or 500)
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(["internal_error"], 500)
