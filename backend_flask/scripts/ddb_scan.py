"""bin/ddb/scan [--limit N]: print every item of the local table as JSON lines (never against prod)."""

from __future__ import annotations

import argparse
import sys

from backend_flask.lib import ddb
from backend_flask.scripts.common import ScriptError, add_target, run
from backend_flask.scripts.ddb_common import capacity_line, dumps, require_table, target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/scan", description=__doc__)
    add_target(parser)
    parser.add_argument("--limit", type=int, help="stop after this many items")
    args = parser.parse_args(argv)
    if args.target == "prod":
        raise ScriptError("scan refuses to run against prod: it reads (and pays for) the whole table")
    t = target(args.target)
    require_table(t)
    capacity: list[dict] = []
    count = 0
    for item in ddb.scan_items(t.client, t.table, limit=args.limit, capacity=capacity):
        print(dumps(item))
        count += 1
    print(f"items: {count}; {capacity_line(capacity)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
