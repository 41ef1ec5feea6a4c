"""boto3 clients built once per process, with bounded timeouts and retries that fit the request's budget."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError
from botocore.retries import standard

from backend_flask.lib import budget

# Local endpoints accept any credentials; real AWS gets none from us.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def make_client(service: str, *, region: str, endpoint_url: str | None = None,
                timeout: float = 2.0, max_attempts: int = 3, pool_size: int = 32):
    """Return a boto3 client; local endpoints get dummy credentials, AWS the default chain.

    Timeouts are short so a dead endpoint turns into a 503 within seconds, and
    the standard retry mode backs off on throttling. Inside a request's budget
    (`lib/budget`) each attempt also fits in what is left: see follow_budget().
    """
    botocore_config = BotoConfig(
        region_name=region,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=pool_size,
        tcp_keepalive=True,
    )
    kwargs = {"config": botocore_config}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
        kwargs.update(LOCAL_CREDENTIALS)
    client = boto3.session.Session().client(service, **kwargs)
    follow_budget(client, timeout)
    return client


# An attempt is not started, nor a retry made, with less of the budget left than this.
MIN_ATTEMPT_SECONDS = 0.05


class BudgetSpent(BotoCoreError):
    """The request's time budget left no room for another attempt."""

    fmt = "the request's time budget is spent"


def follow_budget(client: Any, read_timeout: float) -> None:
    """Make every attempt of the client's calls fit in the current budget; without one, change nothing.

    botocore reads a per-request read timeout from the request's context
    (`read_timeout`): each attempt gets what is left of the budget, if that is
    less than its own. A retry is vetoed (a `needs-retry` handler that runs
    before botocore's and answers False) unless the longest backoff botocore
    could pick for it, plus a minimal attempt, still fits. The connect timeout
    cannot be set per request: build a client that serves requests with a
    connect timeout no longer than the budget.
    """
    service = client.meta.service_model.service_id.hyphenize()
    events = standard.RetryEventAdapter()
    longest_backoff = standard.ExponentialBackoff(random=lambda: 1.0, service_name=service,
                                                  throttling_detector=standard.ThrottlingErrorDetector(events))

    def bound_attempt(request: Any, **_: Any) -> None:
        left = budget.remaining()
        if left is None:
            return
        if left < MIN_ATTEMPT_SECONDS:
            raise BudgetSpent()   # botocore hands it to needs-retry, which stops: the call raises it
        request.context["read_timeout"] = min(read_timeout, left)

    def stop_retrying(**kwargs: Any) -> bool | None:
        left = budget.remaining()
        if left is None:
            return None
        response = kwargs.get("response")
        if kwargs.get("caught_exception") is None and response is not None and response[0].status_code < 400:
            return None   # a success: nothing to retry
        if left < longest_backoff.delay_amount(events.create_retry_context(**kwargs)) + MIN_ATTEMPT_SECONDS:
            return False
        return None

    client.meta.events.register(f"before-send.{service}", bound_attempt)
    client.meta.events.register_first(f"needs-retry.{service}", stop_retrying)
