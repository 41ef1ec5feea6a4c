"""bin/cognito/list-users [prod]: print the user pool's users as a JSON map of handle -> sub.

Local (default) asks cognito-local (COGNITO_ENDPOINT_URL, or bin/dev's);
`prod` asks real Cognito. The pool is COGNITO_USER_POOL_ID.
"""

from __future__ import annotations

import argparse
import json

from toolbox import users
from toolbox.scripts.common import ScriptError, add_target, cognito_client, config_for, run


def main(argv: list[str]) -> int:
    """List the pool's users."""
    parser = argparse.ArgumentParser(prog="bin/cognito/list-users", description=__doc__.splitlines()[0])
    add_target(parser)
    args = parser.parse_args(argv)
    config = config_for(args.target)
    if not config.cognito_user_pool_id:
        raise ScriptError("no user pool id: set COGNITO_USER_POOL_ID (or start the local stack with bin/dev)")
    by_handle = users.pool_users_by_handle(cognito_client(config), config.cognito_user_pool_id)
    print(json.dumps(by_handle, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    run(main)
