"""bin/cognito/token HANDLE: print an access token for a user of the local pool.

The local stack is bin/dev's (its recorded app client) or docker compose's
(the same ports; the app client is found by name). The token's issuer is
whatever cognito-local was told it is, not the address used here, so a token
fetched from the host is one the API in compose accepts.
"""

from __future__ import annotations

import argparse

from toolbox import cognito, settings, users
from toolbox.scripts.common import ScriptError, cognito_client, config_for, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/cognito/token", description=__doc__.splitlines()[0])
    parser.add_argument("handle", help="e.g. andrewbrown, bayko, londo")
    parser.add_argument("--password", help="defaults to the demo password (DEMO_PASSWORD)")
    args = parser.parse_args(argv)
    config = config_for("local")
    idp = cognito_client(config)
    # bin/dev records its app client; a stack without that record (docker compose up) is asked by name.
    client_id = config.cognito_client_id or cognito.find_pool(idp)[1]
    if not client_id:
        raise ScriptError(f"no app client {cognito.CLIENT_NAME!r} at {config.cognito_endpoint_url}: start the "
                          "stack with bin/dev or docker compose up first")
    token = users.token_for_handle(config.connection_url, idp, client_id, args.handle.lstrip("@"),
                                   args.password or settings.DEMO_PASSWORD)
    print(token)
    return 0


if __name__ == "__main__":
    run(main)
