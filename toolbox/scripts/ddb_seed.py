"""bin/ddb/seed [prod] [HANDLE_A HANDLE_B] [--messages N]: write the demo conversation of two Postgres users.

Without --messages it writes the short demo conversation (through patterns C
and D) unless the pair already has one. With --messages N it adds N older
messages to the pair's conversation with batched writes, for benchmarks.
"""

from __future__ import annotations

import argparse
import sys
import time

from toolbox import seed
from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import ScriptError, run
from toolbox.scripts.ddb_common import capacity_line, require_table, split_target, target


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, width: int = 30):
        self.width = width
        self.drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.drawn_at < 0.1:
            return
        self.drawn_at = now
        filled = self.width * done // max(1, total)
        sys.stderr.write(f"\rseeding [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/seed", description=__doc__.splitlines()[0],
                                     epilog="Handles default to andrewbrown and bayko (db/seed.sql).")
    parser.add_argument("words", nargs="*", metavar="[prod] [HANDLE_A HANDLE_B]",
                        help="optional target, then the two users' handles")
    parser.add_argument("--messages", type=int, default=0, metavar="N",
                        help="add N older messages with batched writes (large data set)")
    args = parser.parse_args(argv)
    target_name, handles = split_target(parser, args.words)
    if handles and len(handles) != 2:
        parser.error("give two handles, or none for the demo users")
    if args.messages < 0:
        parser.error("--messages must not be negative")
    if target_name == "prod" and args.messages:
        raise ScriptError("seed --messages refuses to run against prod")
    t = target(target_name)
    require_table(t)
    first, second = seed.users_by_handle(t.config.connection_url, handles or seed.DEMO_HANDLES)
    start = time.perf_counter()
    with consumed_capacity(t.client) as capacity:
        if args.messages:
            result = seed.seed_messages(t.messages, first, second, args.messages, progress=ProgressBar())
        else:
            result = {"group": seed.write_demo_conversation(t.messages, first, second)}
    if args.messages:
        seconds = time.perf_counter() - start
        print(f"added {result['messages']} messages to conversation {result['message_group_uuid']} of "
              f"{first['handle']} and {second['handle']} in {seconds:.1f} s")
    else:
        group = result["group"]
        if group:
            print(f"wrote the demo conversation {group} of {first['handle']} and {second['handle']}")
        else:
            print(f"{first['handle']} and {second['handle']} already have a conversation; nothing written")
    print(capacity_line(capacity), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
