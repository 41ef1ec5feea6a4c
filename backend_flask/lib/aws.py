"""boto3 clients built once per process, with bounded timeouts and retries."""

from __future__ import annotations

import boto3
from botocore.config import Config as BotoConfig

# Local endpoints accept any credentials; real AWS gets none from us.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def make_client(service: str, *, region: str, endpoint_url: str | None = None,
                timeout: float = 2.0, max_attempts: int = 3, pool_size: int = 32):
    """Return a boto3 client; local endpoints get dummy credentials, AWS the default chain.

    Timeouts are short so a dead endpoint turns into a 503 within seconds, and
    the standard retry mode backs off on throttling.
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
    return boto3.session.Session().client(service, **kwargs)
