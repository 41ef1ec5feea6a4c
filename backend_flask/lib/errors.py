"""Errors raised by the data-access layers (no Flask here).

The API maps NotFound to 404, Conflict to 409/422 as the route decides, and
ServiceUnavailable to 503. Anything else is a bug and is left to raise.
"""

from __future__ import annotations


class DataError(Exception):
    """Base of the data layers' own errors; `code` is what the API shows."""

    code = "data_error"

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message or self.code)
        if code:
            self.code = code


class NotFound(DataError):
    """The thing asked for does not exist (or the caller may not see it)."""

    code = "not_found"


class Conflict(DataError):
    """A condition failed: the write would have replaced or duplicated data."""

    code = "conflict"


class ServiceUnavailable(DataError):
    """A backing service (Postgres, DynamoDB, Cognito) did not answer in time."""

    code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class DynamoDBUnavailable(ServiceUnavailable):
    code = "dynamodb_unavailable"


class InvalidCursor(DataError):
    """A pagination cursor that this API did not issue."""

    code = "invalid_cursor"
