"""bin/ddb/schema-load [prod]: create the cruddur-messages table (GSI, stream, on demand) if missing."""

from __future__ import annotations

import argparse

from backend_flask.lib import ddb
from backend_flask.scripts.common import add_target, run
from backend_flask.scripts.ddb_common import target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/schema-load", description=__doc__)
    add_target(parser)
    args = parser.parse_args(argv)
    t = target(args.target)
    if ddb.create_table(t.client, t.table):
        print(f"created table {t.table} at {t.where}")
    else:
        print(f"table {t.table} already exists at {t.where}")
    return 0


if __name__ == "__main__":
    run(main)
