"""The project's one error vocabulary, from data access to HTTP (no Flask here).

Every error a client or an operator can act on is an `Error`: an HTTP status
and a list of codes (the JSON array the frontend renders). Data access raises
them, services raise them, and `backend_flask.errors` turns any of them into a
response. Anything else that escapes is a bug and answers 500.
"""

from __future__ import annotations


class Error(Exception):
    """An outcome with an HTTP status and error codes; `detail` is for logs, never for clients."""

    status = 500
    code = "internal_error"

    def __init__(self, *codes: str, detail: str = ""):
        self.codes = list(codes) or [self.code]
        self.code = self.codes[0]
        super().__init__(detail or ", ".join(self.codes))


class BadRequest(Error):
    """The request is malformed (not JSON, bad query parameter, bad header)."""

    status = 400
    code = "bad_request"


class InvalidCursor(BadRequest):
    """A pagination cursor that this API did not issue."""

    code = "invalid_cursor"


class Unauthorized(Error):
    """No token, one that cannot be trusted, or no user behind it."""

    status = 401
    code = "unauthorized"


class NotFound(Error):
    """The thing asked for does not exist, or the caller may not see it."""

    status = 404
    code = "not_found"


class Conflict(Error):
    """The request contradicts what is stored (an idempotency key reused for another message)."""

    status = 409
    code = "conflict"


class Unprocessable(Error):
    """Well-formed, but fails validation (the frontend's form errors)."""

    status = 422
    code = "unprocessable"


class ServiceUnavailable(Error):
    """A backing service (Postgres, DynamoDB, Cognito) did not answer in time; try again shortly."""

    status = 503
    code = "service_unavailable"
    # What /api/health shows for this failure; more specific than the code clients see.
    health = "unavailable"

    @property
    def health_code(self) -> str:
        """The word /api/health reports for this failure."""
        return self.health if self.health != "unavailable" else self.code


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class DynamoDBUnavailable(ServiceUnavailable):
    code = "dynamodb_unavailable"


class TableMissing(DynamoDBUnavailable):
    """The messages table does not exist: our problem, not the client's, so a 503."""

    health = "table_not_found"
