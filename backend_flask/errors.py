"""The API's error family and the handlers that turn errors into JSON.

The frontend renders a JSON array of error codes, so every error body is one.
Errors of the data layers are mapped here too: whatever a client sends ends
in a 4xx, and a backing service that is down in a 503, never a 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from backend_flask.lib.errors import Conflict, InvalidCursor, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error the client can act on: a status and a list of error codes."""

    status = 400
    default_code = "bad_request"

    def __init__(self, *codes: str, status: int | None = None):
        super().__init__(", ".join(codes))
        self.codes = list(codes) or [self.default_code]
        if status is not None:
            self.status = status


class BadRequest(APIError):
    """The request is malformed (not JSON, bad query parameter)."""

    status = 400
    default_code = "bad_request"


class Unauthorized(APIError):
    """No token, or one that cannot be trusted, or no user behind it."""

    status = 401
    default_code = "unauthorized"


class NotFoundError(APIError):
    """The thing asked for does not exist, or the caller may not see it."""

    status = 404
    default_code = "not_found"


class Unprocessable(APIError):
    """Well-formed, but fails validation (the frontend's form errors)."""

    status = 422
    default_code = "unprocessable"


class Unavailable(APIError):
    """A backing service is down."""

    status = 503
    default_code = "service_unavailable"


def error_response(codes: list[str], status: int) -> Response:
    """Return the JSON array of codes with a status, plus the headers that status calls for."""
    response = jsonify(codes)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cruddur"'
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""

    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        return error_response(err.codes, err.status)

    @app.errorhandler(NotFound)
    def _not_found(err: NotFound):
        if err.code == "table_not_found":
            # Our table missing is our problem, not the client's.
            log.error("DynamoDB table missing: %s", err)
            return error_response(["dynamodb_unavailable"], 503)
        return error_response([err.code], 404)

    @app.errorhandler(InvalidCursor)
    def _invalid_cursor(err: InvalidCursor):
        return error_response([err.code], 400)

    @app.errorhandler(Conflict)
    def _conflict(err: Conflict):
        return error_response([err.code], 409)

    @app.errorhandler(ServiceUnavailable)
    def _unavailable(err: ServiceUnavailable):
        log.warning("backing service unavailable: %s", err)
        return error_response([err.code], 503)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        response = error_response([code], err.code or 500)
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(["internal_error"], 500)
