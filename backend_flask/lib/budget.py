"""A time budget per request: no backend call waits longer than what is left of it.

The API opens a budget at the start of each request (`REQUEST_BUDGET`) and
closes it at the end; data access reads what is left here and shortens its
own timeouts to it: each DynamoDB attempt's read timeout, and whether another
attempt still fits (`lib/aws`); the wait for a Postgres connection and the
watchdog that cuts a query (`lib/db`); the JWKS download
(`lib/cognito_jwt_token`). A backend that hangs therefore costs a request at
most its budget, then a 503. Outside a budget (scripts, the stream Lambda,
tests) every call keeps its own timeouts.

The deadline lives in a context variable: each thread, and under gevent each
greenlet, sees its own, so nothing here needs signals or alarms, and a
thread started for part of the work opens its own budget.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token

_deadline: ContextVar[float | None] = ContextVar("cruddur_deadline", default=None)


def start(seconds: float) -> Token:
    """Open a budget of `seconds` from now (never past one already open); return the token for end()."""
    deadline = time.monotonic() + seconds
    current = _deadline.get()
    return _deadline.set(deadline if current is None else min(current, deadline))


def end(token: Token) -> None:
    """Close the budget start() opened."""
    _deadline.reset(token)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run a block under a budget of `seconds` (or less, inside a tighter one)."""
    token = start(seconds)
    try:
        yield
    finally:
        end(token)


def remaining() -> float | None:
    """Seconds left in the current budget (0 or less when spent), or None outside any budget."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def bound(timeout: float) -> float:
    """Return `timeout`, or what is left of the budget if that is less (0 or less when spent)."""
    left = remaining()
    return timeout if left is None else min(timeout, left)
