"""bin/ddb/migrate [prod] [--resume] [--dry-run]: add what a table written by the original bootcamp code lacks.

Writes the membership item of every conversation row's owner where it is
missing (conditional puts only: safe while the API runs, and idempotent).
After each scan page it prints its progress and saves the position in a
state file, so an interrupted run (or one stopped by --max-pages) continues
with --resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolbox import migrate
from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import ScriptError, add_target, run
from toolbox.scripts.ddb_common import capacity_line, require_table, target
from toolbox.settings import LOCAL_DIR


def state_path(target_name: str, table: str) -> Path:
    """The default state file of a migration: .local/ddb-migrate-<target>-<table>.json."""
    return LOCAL_DIR / f"ddb-migrate-{target_name}-{table}.json"


def load_state(path: Path, table: str, where: str) -> dict:
    """Return a saved migration state; fail in one line if there is none for this table."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScriptError(f"nothing to resume: no readable state file {path}") from exc
    if state.get("table") != table or state.get("where") != where:
        raise ScriptError(f"{path} belongs to table {state.get('table')} at {state.get('where')}, not {table}")
    return state


def save_state(path: Path, table: str, where: str, progress: migrate.Progress) -> None:
    """Save where the scan stands (written to a temporary file first, so a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"table": table, "where": where, "position": progress.position,
                                   "counts": progress.counts()}, indent=2) + "\n")
    partial.replace(path)


def describe(p: migrate.Progress, dry_run: bool) -> str:
    wrote = "would write" if dry_run else "wrote"
    line = (f"{p.scanned} items scanned, {p.rows} conversation rows: {wrote} {p.written} membership items, "
            f"{p.present} already there")
    return line + (f", {p.skipped} rows with no uuid left alone" if p.skipped else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/migrate", description=__doc__.splitlines()[0],
                                     epilog="The state file is .local/ddb-migrate-<target>-<table>.json unless "
                                            "--state names another; it is removed when the migration completes.")
    add_target(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the position the last run saved")
    parser.add_argument("--dry-run", action="store_true", help="count what is missing, write nothing")
    parser.add_argument("--page-size", type=int, default=500, metavar="N", help="items per scan page (1-10000)")
    parser.add_argument("--max-pages", type=int, metavar="N", help="stop after N pages (continue with --resume)")
    parser.add_argument("--state", type=Path, metavar="FILE", help="where to save the scan position")
    args = parser.parse_args(argv)
    if not 1 <= args.page_size <= 10_000:
        parser.error("--page-size must be 1..10000")
    if args.max_pages is not None and args.max_pages < 1:
        parser.error("--max-pages must be at least 1")
    t = target(args.target)
    require_table(t)
    path = args.state or state_path(args.target, t.table)
    start, progress = None, migrate.Progress()
    if args.resume:
        state = load_state(path, t.table, t.where)
        start, progress = state["position"], migrate.Progress(**state["counts"])
        print(f"resuming {t.table} at {t.where} after {progress.pages} pages", file=sys.stderr)
    elif path.exists():
        print(f"starting over ({path} holds an unfinished run: --resume continues it)", file=sys.stderr)
    earlier = progress
    pages = 0
    with consumed_capacity(t.client) as capacity:
        for progress in migrate.migrate(t.messages, start=start, page_size=args.page_size, dry_run=args.dry_run,
                                        progress=earlier):
            pages += 1
            print(f"page {progress.pages}: {describe(progress, args.dry_run)}", file=sys.stderr)
            if progress.position is None:
                break
            if not args.dry_run:
                save_state(path, t.table, t.where, progress)
            if args.max_pages is not None and pages >= args.max_pages:
                resume = "" if args.dry_run else "; continue with --resume"
                print(f"stopped after {pages} pages: {describe(progress, args.dry_run)}{resume}")
                print(capacity_line(capacity), file=sys.stderr)
                return 0
    if not args.dry_run:
        path.unlink(missing_ok=True)
    print(f"migrated {t.table} at {t.where}: {describe(progress, args.dry_run)}")
    print(capacity_line(capacity), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
