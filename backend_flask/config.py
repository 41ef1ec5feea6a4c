"""Every setting of the backend, read from the environment in one place.

Defaults suit the local stack that `bin/dev` starts. In production, leave
`AWS_ENDPOINT_URL` and `COGNITO_ENDPOINT_URL` unset and set the Cognito ids.
Nothing else in the project reads `os.environ`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_DIR = ROOT / ".local"
# bin/dev writes the ports and Cognito ids it chose here, so that bin/ scripts
# run from another terminal find the running stack without extra exports.
LOCAL_STATE_FILE = LOCAL_DIR / "dev-state.json"


@dataclass(frozen=True)
class Config:
    """The backend's settings; build with Config.from_env()."""

    # Postgres
    connection_url: str = "postgresql://postgres@127.0.0.1:15432/cruddur"
    db_pool_min: int = 1
    db_pool_max: int = 8
    db_timeout: float = 3.0            # seconds to get a connection or run a query
    prod_connection_url: str = ""      # the server bin/db/* scripts reach with their `prod` argument
    # AWS: endpoint unset means real AWS
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    ddb_message_table: str = "cruddur-messages"
    ddb_timeout: float = 2.0           # connect/read timeout of each DynamoDB call
    ddb_max_attempts: int = 3          # retries with backoff, throttling included
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
    # Local stack (bin/dev): fixed ports the frontend and the README expect
    port: int = 4567
    dev_pg_port: int = 15432
    dev_ddb_port: int = 8000
    dev_cognito_port: int = 9229
    demo_password: str = "Cruddur-demo-1!"
    user_cache_ttl: float = 30.0       # seconds a sub -> user lookup is cached per process

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Config:
        """Build the settings from the environment, falling back to bin/dev's state file."""
        env = dict(local_state())
        env.update(os.environ if environ is None else environ)
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


def local_state() -> dict[str, str]:
    """Return the settings bin/dev recorded for the running local stack (empty if none)."""
    try:
        return json.loads(LOCAL_STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def write_local_state(values: Mapping[str, str]) -> None:
    """Record the running local stack's settings for other bin/ scripts."""
    LOCAL_DIR.mkdir(exist_ok=True)
    LOCAL_STATE_FILE.write_text(json.dumps(dict(values), indent=2, sort_keys=True) + "\n")
