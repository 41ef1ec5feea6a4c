"""bin/ddb/schema-load [prod]: create the cruddur-messages table (GSI, stream, on demand) if missing."""

from __future__ import annotations

import argparse

from toolbox.scripts.common import add_target, run
from toolbox.scripts.ddb_common import target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/schema-load", description=__doc__)
    add_target(parser)
    args = parser.parse_args(argv)
    t = target(args.target)
    if t.messages.create():
        print(f"created table {t.table} at {t.where}")
    else:
        print(f"table {t.table} already exists at {t.where}")
    return 0


if __name__ == "__main__":
    run(main)
