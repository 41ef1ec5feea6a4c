"""bin/ddb/list-tables [prod]: print the names of the endpoint's tables, one per line."""

from __future__ import annotations

import argparse

from backend_flask.lib import ddb
from toolbox.scripts.common import add_target, run
from toolbox.scripts.ddb_common import target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/list-tables", description=__doc__)
    add_target(parser)
    args = parser.parse_args(argv)
    for name in ddb.list_tables(target(args.target).client):
        print(name)
    return 0


if __name__ == "__main__":
    run(main)
