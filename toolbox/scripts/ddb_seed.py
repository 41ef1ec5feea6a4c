"""bin/ddb/seed [prod] [HANDLE_A HANDLE_B] [--messages N]: write the demo conversation of two Postgres users.

Without --messages it writes the short demo conversation (through patterns C
and D) unless the pair already has one. With --messages N it gives the pair's
conversation a history of N older messages with batched writes, for
benchmarks: every message has a fixed key, so a rerun writes only what an
interrupted run left out. It uses its own patient timeouts and retries
(seed.SEED_TIMEOUT, seed.SEED_MAX_ATTEMPTS), not the API's.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from toolbox import seed
from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import ScriptError, run
from toolbox.scripts.ddb_common import capacity_line, require_table, split_target, target


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second.

    Use it as a context manager: leaving the block ends a partly drawn line,
    so an error printed after it starts on a line of its own.
    """

    def __init__(self, width: int = 30, stream: TextIO | None = None):
        self.width = width
        self.stream = stream or sys.stderr
        self.drawn_at = 0.0
        self.open_line = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.drawn_at < 0.1:
            return
        self.drawn_at = now
        filled = self.width * done // max(1, total)
        self.stream.write(f"\rseeding [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
        self.open_line = True
        if done >= total:
            self.finish()
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line if one is drawn."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *_exc) -> None:
        self.finish()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/seed", description=__doc__.splitlines()[0],
                                     epilog="Handles default to andrewbrown and bayko (db/seed.sql).")
    parser.add_argument("words", nargs="*", metavar="[prod] [HANDLE_A HANDLE_B]",
                        help="optional target, then the two users' handles")
    parser.add_argument("--messages", type=int, default=0, metavar="N",
                        help="give the pair a history of N older messages with batched writes (large data set); "
                             "a rerun completes an interrupted one, it never adds N more")
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
    if args.messages:
        messages = seed.patient_table(t.config)
        with consumed_capacity(messages.client) as capacity, ProgressBar() as bar:
            result = seed.seed_messages(messages, first, second, args.messages, progress=bar)
    else:
        with consumed_capacity(t.client) as capacity:
            result = {"group": seed.write_demo_conversation(t.messages, first, second)}
    if args.messages:
        seconds = time.perf_counter() - start
        print(f"wrote {result['written']} messages to conversation {result['message_group_uuid']} of "
              f"{first['handle']} and {second['handle']} in {seconds:.1f} s; its seeded history has "
              f"{result['messages']} ({result['existing']} were there already)")
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
