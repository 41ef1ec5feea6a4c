"""bin/cognito/token HANDLE: print an access token for a user of the local pool."""

from __future__ import annotations

import argparse

from toolbox import settings, users
from toolbox.scripts.common import ScriptError, cognito_client, config_for, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/cognito/token", description=__doc__)
    parser.add_argument("handle", help="e.g. andrewbrown, bayko, londo")
    parser.add_argument("--password", help="defaults to the demo password (DEMO_PASSWORD)")
    args = parser.parse_args(argv)
    config = config_for("local")
    if not config.cognito_client_id:
        raise ScriptError("no Cognito app client known: start the stack with bin/dev first")
    token = users.token_for_handle(config.connection_url, cognito_client(config), config.cognito_client_id,
                                   args.handle.lstrip("@"), args.password or settings.DEMO_PASSWORD)
    print(token)
    return 0


if __name__ == "__main__":
    run(main)
