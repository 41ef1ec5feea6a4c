"""Every setting of the shipped backend, read from the environment and nothing else.

Defaults are those of production: with nothing set, DynamoDB and Cognito are
the real AWS services. The local toolbox (`toolbox/`) starts local services and
hands their addresses to the processes it starts, through their environment.
Nothing else in `backend_flask` reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

# Where the shipped data files are: db/sql/ (query templates) and openapi.yml.
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Config:
    """The backend's settings; build with Config.from_env()."""

    # Postgres
    connection_url: str = ""           # libpq URL of the users database (RDS in AWS); required
    db_pool_min: int = 1
    db_pool_max: int = 8
    db_timeout: float = 3.0            # seconds to get a connection or run a query (within the request budget)
    # AWS: endpoint unset means real AWS
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    ddb_message_table: str = "cruddur-messages"
    ddb_timeout: float = 2.0           # connect/read timeout of each DynamoDB attempt (within the request budget)
    ddb_max_attempts: int = 3          # attempts per call (standard retry mode: backs off on throttling)
    # Cognito
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    cognito_region: str = "us-east-1"
    cognito_endpoint_url: str | None = None   # cognito-local; unset for real Cognito
    jwks_refresh_interval: float = 60.0
    # HTTP
    frontend_url: str = "http://localhost:3000"
    backend_url: str = "http://localhost:4567"
    log_level: str = "INFO"
    user_cache_ttl: float = 30.0       # seconds a sub -> user lookup is cached per process
    request_budget: float = 1.2        # seconds a request may spend waiting on backends before it is a 503
    health_budget: float = 0.3         # seconds /api/health gives each check (both run at once)
    health_cache_ttl: float = 1.0      # seconds a health check's result is reused per process
    events_heartbeat: float = 15.0     # seconds between keep-alive comments on an event stream

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Config:
        """Build the settings from the environment (os.environ unless given), then `overrides`."""
        env = os.environ if environ is None else environ
        values = _read_fields(cls, env)
        # The name the original bootcamp used for the app client.
        if "cognito_client_id" not in values and env.get("COGNITO_USER_POOL_CLIENT_ID"):
            values["cognito_client_id"] = env["COGNITO_USER_POOL_CLIENT_ID"]
        if "aws_region" not in values and env.get("AWS_DEFAULT_REGION"):
            values["aws_region"] = env["AWS_DEFAULT_REGION"]
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> Config:
        """Return a copy with some settings changed."""
        return replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """Return the settings as environment variables, for child processes."""
        return {k.upper(): str(v) for k, v in asdict(self).items() if v is not None}

    @property
    def is_local(self) -> bool:
        """True when DynamoDB is a local endpoint rather than AWS."""
        return bool(self.aws_endpoint_url)

    @property
    def cognito_issuer(self) -> str:
        """The `iss` every access token of the pool carries."""
        if self.cognito_endpoint_url:
            return f"{self.cognito_endpoint_url.rstrip('/')}/{self.cognito_user_pool_id}"
        return f"https://cognito-idp.{self.cognito_region}.amazonaws.com/{self.cognito_user_pool_id}"

    @property
    def cognito_jwks_url(self) -> str:
        """Where the pool publishes its signing keys."""
        return f"{self.cognito_issuer}/.well-known/jwks.json"


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the HTTP server (`python -m backend_flask.server`); its command line overrides them."""

    port: int = 4567
    web_concurrency: int = 0                # worker processes; 0: one per CPU
    server_idle_timeout: float = 75.0       # keep-alive: wait this long for the next request (ALB idle is 60 s)
    server_head_timeout: float = 10.0       # request line + headers, from their first byte
    server_body_timeout: float = 10.0       # the whole body
    server_max_body_bytes: int = 64 * 1024  # bigger bodies get 413, chunked or not
    server_max_connections: int = 4000      # per worker
    server_graceful_timeout: float = 5.0    # on SIGTERM, in-flight requests get this long to finish
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Build the server settings from the environment (os.environ unless given)."""
        return cls(**_read_fields(cls, os.environ if environ is None else environ))


def _read_fields(cls, env: Mapping[str, str]) -> dict:
    """Return the dataclass fields set in `env` (by upper-case name), converted to their types."""
    values = {}
    for f in fields(cls):
        raw = env.get(f.name.upper())
        if raw is None or raw == "":
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind.startswith("int"):
            values[f.name] = int(raw)
        elif kind.startswith("float"):
            values[f.name] = float(raw)
        else:
            values[f.name] = raw
    return values
