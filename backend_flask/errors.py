"""The API's error family and the one handler that turns it into JSON.

The frontend renders a JSON array of error codes, so every error body is one.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from backend_flask.lib.errors import NotFound, ServiceUnavailable

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client can act on: a status and a list of error codes."""

    status = 400

    def __init__(self, *codes: str, status: int | None = None):
        super().__init__(", ".join(codes))
        self.codes = list(codes) or [self.default_code]
        if status is not None:
            self.status = status

    default_code = "bad_request"


class BadRequest(APIError):
    status = 400
    default_code = "bad_request"


class Unauthorized(APIError):
    status = 401
    default_code = "unauthorized"


class NotFoundError(APIError):
    status = 404
    default_code = "not_found"


class Unprocessable(APIError):
    status = 422
    default_code = "unprocessable"


class Unavailable(APIError):
    status = 503
    default_code = "service_unavailable"


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""

    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        response = jsonify(err.codes)
        response.status_code = err.status
        if err.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cruddur"'
        return response

    @app.errorhandler(NotFound)
    def _not_found(err: NotFound):
        return jsonify([err.code]), 404

    @app.errorhandler(ServiceUnavailable)
    def _unavailable(err: ServiceUnavailable):
        log.warning("backing service unavailable: %s", err)
        response = jsonify([err.code])
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        return jsonify([code]), err.code or 500

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return jsonify(["internal_error"]), 500
