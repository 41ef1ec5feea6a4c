"""What every bin/ script shares: target selection, clients, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.errors import Error
from toolbox import settings


class ScriptError(Exception):
    """A problem the user can fix; shown as one line, exit status 1."""


def add_target(parser: argparse.ArgumentParser) -> None:
    """Add the optional `prod` positional argument the original scripts had."""
    parser.add_argument("target", nargs="?", choices=["local", "prod"], default="local",
                        help="local stack (default) or real AWS (prod)")


def config_for(target: str = "local") -> Config:
    """Return the settings of the local stack, or of production (the environment alone) for `prod`."""
    return settings.prod_config() if target == "prod" else settings.local_config()


def ddb_client(config: Config):
    """Return a DynamoDB client for the target."""
    return settings.messages_table(config).client


def cognito_client(config: Config):
    """Return a Cognito identity-provider client for the target."""
    return make_client("cognito-idp", region=config.cognito_region, endpoint_url=config.cognito_endpoint_url,
                       timeout=5.0)


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main(); expected failures print one line and exit 1, no traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        status = main(sys.argv[1:] if argv is None else argv)
    except (ScriptError, Error, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        print(f"error: {err.get('Code', 'ClientError')}: {err.get('Message', exc)}", file=sys.stderr)
        sys.exit(1)
    except BotoCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status or 0)
