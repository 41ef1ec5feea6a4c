"""bin/db/*: create, drop, load and inspect the Postgres database, as the bootcamp's scripts did.

Each bin/db/<command> runs `bin/_py toolbox.scripts.db_admin <command>`.
The database is CONNECTION_URL's (bin/dev's local server by default); a
`prod` argument, where the original script had one, means PROD_CONNECTION_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backend_flask.lib.errors import ServiceUnavailable
from toolbox import pg, settings, users
from toolbox.scripts.common import ScriptError, cognito_client, config_for, run


def database_url(target: str) -> str:
    """Return the connection URL of the target's database."""
    if target == "prod" and not os.environ.get("PROD_CONNECTION_URL"):
        raise ScriptError("PROD_CONNECTION_URL is not set")
    return config_for(target).connection_url


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return rows as a plain text table with a header, like psql's."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [["" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def create(args: argparse.Namespace) -> int:
    """Create the database (nothing to do if it exists)."""
    url = database_url("local")
    name = pg.database_name(url)
    print(f"created database {name}" if pg.create_database(url) else f"database {name} already exists")
    return 0


def drop(args: argparse.Namespace) -> int:
    """Drop the database if it exists."""
    url = database_url("local")
    name = pg.database_name(url)
    dropped = pg.drop_database(url, force=args.force)
    print(f"dropped database {name}" if dropped else f"database {name} does not exist")
    return 0


def schema_load(args: argparse.Namespace) -> int:
    """Create the tables and indexes that are missing (safe to run again)."""
    url = database_url(args.target)
    pg.load_schema(url)
    print(f"loaded {pg.SCHEMA_FILE.relative_to(pg.ROOT)} into {pg.redact(url)}")
    return 0


def seed(args: argparse.Namespace) -> int:
    """Insert the demo users that are missing (safe to run again)."""
    url = database_url(args.target)
    print(f"loaded {pg.SEED_FILE.relative_to(pg.ROOT)} into {pg.redact(url)}: {seed_summary(pg.load_seed(url))}")
    return 0


def seed_summary(result: pg.SeedResult) -> str:
    """Say what the seed inserted and what was there before, e.g. 'inserted 0 users (3 were there already)'."""
    inserted = f"inserted {result.inserted} user{'s' if result.inserted != 1 else ''}"
    if not result.existing:
        return inserted
    return f"{inserted} ({result.existing} {'was' if result.existing == 1 else 'were'} there already)"


def connect(args: argparse.Namespace) -> int:
    """Open psql on the database; every other argument goes to psql."""
    url = database_url(args.target)
    psql = pg.psql_path()
    if psql is None:
        raise ScriptError("psql not found: install it (Debian/Ubuntu: apt-get install postgresql-client) "
                          "or run bin/dev once to get the embedded one")
    # The password goes in the environment, not argv, where `ps` would show it.
    conninfo, password = pg.split_password(url)
    env = {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)
    sys.stdout.flush()
    os.execve(psql, [psql, conninfo, *args.psql_args], env)
    return 0  # not reached: psql replaced this process


def sessions(args: argparse.Namespace) -> int:
    """Show who is connected to the server."""
    print(format_table(pg.sessions(database_url(args.target))))
    return 0


def update_cognito_user_ids(args: argparse.Namespace) -> int:
    """Set users.cognito_user_id from the user pool, by preferred_username = handle."""
    config = config_for(args.target)
    if not config.cognito_user_pool_id:
        raise ScriptError("no user pool id: set COGNITO_USER_POOL_ID (or start the local stack with bin/dev)")
    report = users.update_cognito_user_ids(database_url(args.target), cognito_client(config),
                                           config.cognito_user_pool_id)
    print_cognito_report(report)
    return 0


def print_cognito_report(report: dict[str, list]) -> None:
    """Show what update_cognito_user_ids changed and what it could not match."""
    for handle, old, new in report["changed"]:
        print(f"{handle}: {old or '(none)'} -> {new or '(none)'}")
    if not report["changed"]:
        print("cognito_user_id already up to date")
    if report["unmatched_db"]:
        print(f"no Cognito user for: {', '.join(report['unmatched_db'])}")
    if report["unmatched_pool"]:
        print(f"no Postgres user for: {', '.join(report['unmatched_pool'])}")
    if report["ambiguous"]:
        print(f"several Cognito users share the handle (left alone): {', '.join(report['ambiguous'])}")


def setup(args: argparse.Namespace) -> int:
    """Drop and re-create the database, load schema and seed, link the Cognito users."""
    url = database_url("local")
    name = pg.database_name(url)
    config = config_for("local")
    if not args.force:
        refuse_to_orphan(url, config)
    pg.drop_database(url, force=args.force)
    pg.create_database(url)
    print(f"re-created database {name}")
    pg.load_schema(url)
    print(f"loaded {pg.SCHEMA_FILE.relative_to(pg.ROOT)}")
    print(f"loaded {pg.SEED_FILE.relative_to(pg.ROOT)}: {seed_summary(pg.load_seed(url))}")
    if not config.cognito_user_pool_id:
        print("no user pool id (COGNITO_USER_POOL_ID): skipped update_cognito_user_ids")
        return 0
    try:
        report = users.update_cognito_user_ids(url, cognito_client(config), config.cognito_user_pool_id)
    except (BotoCoreError, ClientError) as exc:
        raise ScriptError(f"database ready, but reading the user pool failed ({exc}); "
                          "run bin/db/update_cognito_user_ids once it is reachable") from exc
    print_cognito_report(report)
    return 0


def refuse_to_orphan(url: str, config) -> None:
    """Fail if re-creating the database would orphan conversations of users the seed does not bring back."""
    table = settings.messages_table(config)
    try:
        orphaned = users.users_a_reset_would_orphan(url, table)
    except ServiceUnavailable as exc:
        print(f"warning: could not check {table.name} for conversations the reset would orphan ({exc.code})")
        return
    if orphaned:
        shown = ", ".join(orphaned[:5]) + (f" and {len(orphaned) - 5} more" if len(orphaned) > 5 else "")
        raise ScriptError(f"the reset would orphan the conversations in {table.name} of {len(orphaned)} "
                          f"user(s) that db/seed.sql does not bring back with the same uuid ({shown}); "
                          "pass --force to reset anyway")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], bool, bool]] = {
    # name: (function, takes `prod`, takes --force)
    "create": (create, False, False),
    "drop": (drop, False, True),
    "schema-load": (schema_load, True, False),
    "seed": (seed, True, False),
    "connect": (connect, True, False),
    "sessions": (sessions, True, False),
    "setup": (setup, False, True),
    "update_cognito_user_ids": (update_cognito_user_ids, True, False),
}


TARGET_HELP = {
    "default": "the database in CONNECTION_URL (default) or in PROD_CONNECTION_URL (prod)",
    "update_cognito_user_ids": "CONNECTION_URL and cognito-local or COGNITO_ENDPOINT_URL (default), "
                               "or PROD_CONNECTION_URL and real Cognito (prod)",
}
FORCE_HELP = {
    "default": "end the sessions using the database first",
    "setup": "end the sessions using the database first, and reset even if that orphans conversations "
             "of users db/seed.sql does not bring back",
}
EPILOGS = {
    "connect": "Every other argument goes to psql, e.g. bin/db/connect -c 'SELECT count(*) FROM users' "
               "(or after --: bin/db/connect prod -- -tA -c '...')",
    "setup": "Works on CONNECTION_URL only; never on prod.",
}


def split_psql_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split connect's arguments: ([local|prod] or --help, for us; everything else, for psql).

    An optional `--` before psql's arguments is dropped, so both
    `connect -c 'SELECT 1'` and `connect prod -- -c 'SELECT 1'` work.
    """
    if argv[:1] in (["-h"], ["--help"]):
        return argv[:1], []
    ours = argv[:1] if argv[:1] in (["local"], ["prod"]) else []
    rest = argv[len(ours):]
    return ours, rest[1:] if rest[:1] == ["--"] else rest


def main(argv: list[str]) -> int:
    """Run the bin/db command named by argv[0]."""
    if not argv or argv[0] not in COMMANDS:
        raise ScriptError(f"usage: db_admin {{{','.join(COMMANDS)}}} [ARGS...]")
    name, argv = argv[0], argv[1:]
    function, takes_target, takes_force = COMMANDS[name]
    psql_args: list[str] = []
    if name == "connect":
        argv, psql_args = split_psql_args(argv)
    parser = argparse.ArgumentParser(prog=f"bin/db/{name}", description=function.__doc__,
                                     epilog=EPILOGS.get(name))
    if takes_target:
        parser.add_argument("target", nargs="?", choices=["local", "prod"], default="local",
                            help=TARGET_HELP.get(name, TARGET_HELP["default"]))
    if takes_force:
        parser.add_argument("--force", action="store_true", help=FORCE_HELP.get(name, FORCE_HELP["default"]))
    args = parser.parse_args(argv)
    args.psql_args = psql_args
    return function(args)


if __name__ == "__main__":
    run(main)
