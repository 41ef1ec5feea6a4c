"""docker compose's one-shot `init` service: the demo data of bin/dev, and the pool ids for the API.

It waits until Postgres, DynamoDB Local and cognito-local answer (compose
starts it once their healthchecks pass; waiting here too makes it safe to run
by hand), creates what is missing exactly as bin/dev does (`demo.prepare`:
schema, demo users in Postgres and the pool, linked by sub, the table with
TTL, the demo conversation), then writes the pool and app client ids to an
env file on a volume the API container sources before it starts: the shipped
Config keeps reading only its environment. Everything comes from the
environment compose gives it; running it again changes nothing.

    python -m toolbox.compose_init --env-file /var/lib/cruddur/init/cognito.env
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.errors import Error
from toolbox import demo, pg, settings

log = logging.getLogger("compose-init")

POLL_INTERVAL = 1.0


class InitError(Exception):
    """The stack could not be prepared: a service did not answer, or a setting is missing."""


def wait_until(what: str, check: Callable[[], object], timeout: float) -> None:
    """Call check() until it returns without an error; InitError with the last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            check()
            return
        except (Error, BotoCoreError, ClientError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise InitError(f"{what} did not answer within {timeout:.0f} s: {exc}") from exc
            if not said:
                log.info("waiting for %s (%s)", what, str(exc).splitlines()[0])
                said = True
        time.sleep(POLL_INTERVAL)


def wait_for_services(config: Config, timeout: float) -> None:
    """Wait until Postgres, DynamoDB Local and cognito-local each answer a request."""
    def postgres() -> None:
        with pg.connect(config.connection_url, timeout=5) as conn:
            conn.execute("SELECT 1")

    def client(service: str, endpoint: str | None):
        return make_client(service, region=config.aws_region if service == "dynamodb" else config.cognito_region,
                           endpoint_url=endpoint, timeout=5.0, max_attempts=1)

    dynamodb = client("dynamodb", config.aws_endpoint_url)
    idp = client("cognito-idp", config.cognito_endpoint_url)
    wait_until(f"Postgres at {pg.redact(config.connection_url)}", postgres, timeout)
    wait_until(f"DynamoDB at {config.aws_endpoint_url}", dynamodb.list_tables, timeout)
    wait_until(f"cognito-local at {config.cognito_endpoint_url}", lambda: idp.list_user_pools(MaxResults=1),
               timeout)


def env_file_text(config: Config) -> str:
    """Return the env file that gives the API the local pool: sh syntax, values quoted."""
    values = {"COGNITO_USER_POOL_ID": config.cognito_user_pool_id, "COGNITO_CLIENT_ID": config.cognito_client_id}
    empty = [name for name, value in values.items() if not value]
    if empty:
        raise InitError(f"refusing to write an env file with {', '.join(empty)} empty")
    lines = ["# Written by toolbox.compose_init: the local user pool whose tokens the API accepts."]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> None:
    """Replace the file atomically, so the API never sources half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Prepare the compose stack's data; exit 0 only when the API can start on it."""
    parser = argparse.ArgumentParser(prog="python -m toolbox.compose_init", description=main.__doc__)
    parser.add_argument("--env-file", type=Path, required=True,
                        help="where to write COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID for the API")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for each service (default %(default)s)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # Compose's environment alone: no local defaults, no bin/dev state file.
    config = Config.from_env(os.environ)
    missing = [name for name, value in (("CONNECTION_URL", config.connection_url),
                                        ("AWS_ENDPOINT_URL", config.aws_endpoint_url),
                                        ("COGNITO_ENDPOINT_URL", config.cognito_endpoint_url)) if not value]
    try:
        if missing:
            raise InitError(f"{', '.join(missing)} not set: this only prepares a local stack")
        wait_for_services(config, args.timeout)
        config = demo.prepare(config, settings.DEMO_PASSWORD)
        write_env_file(args.env_file, env_file_text(config))
    except (InitError, Error, BotoCoreError, ClientError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    log.info("ready: pool %s, app client %s (written to %s); demo users %s", config.cognito_user_pool_id,
             config.cognito_client_id, args.env_file, ", ".join(settings.DEMO_HANDLES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
