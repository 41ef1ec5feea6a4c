"""bin/ddb/drop [prod] [--yes]: delete the cruddur-messages table; prod asks first."""

from __future__ import annotations

import argparse
import sys

from toolbox.scripts.common import ScriptError, add_target, run
from toolbox.scripts.ddb_common import target


def confirmed(table: str, where: str) -> bool:
    """Ask on the terminal to type the table name; anything else (or no terminal input) declines."""
    print(f"This deletes table {table} and every message in it at {where}.", file=sys.stderr)
    print("Type the table name to confirm: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        print(file=sys.stderr)  # no input: end the prompt's line before the error
    return answer.strip() == table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/drop", description=__doc__)
    add_target(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation against prod")
    args = parser.parse_args(argv)
    t = target(args.target)
    if args.target == "prod" and not args.yes and not confirmed(t.table, t.where):
        raise ScriptError("not confirmed; nothing deleted")
    if t.messages.delete():
        print(f"deleted table {t.table} at {t.where}")
    else:
        print(f"no table {t.table} at {t.where}; nothing to delete")
    return 0


if __name__ == "__main__":
    run(main)
