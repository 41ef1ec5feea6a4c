"""bin/ddb/scan [--limit N]: print every item of the local table as JSON lines (never against prod)."""

from __future__ import annotations

import argparse
import sys

from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import ScriptError, add_target, run
from toolbox.scripts.ddb_common import capacity_line, dumps, require_table, target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/scan", description=__doc__)
    add_target(parser)
    parser.add_argument("--limit", type=int, metavar="N",
                        help="stop after N items (each Scan call asks for no more than that)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must not be negative")
    if args.target == "prod":
        raise ScriptError("scan refuses to run against prod: it reads (and pays for) the whole table")
    t = target(args.target)
    require_table(t)
    count = 0
    with consumed_capacity(t.client) as capacity:
        for item in t.messages.scan(limit=args.limit):
            print(dumps(item))
            count += 1
    print(f"items: {count}; {capacity_line(capacity)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
