"""bin/ddb/patterns/list-conversations [prod] [HANDLE | --user-uuid UUID]: pattern B, with its cost.

Prints a user's conversations, newest activity first, and the capacity the
query consumed. Without arguments: andrewbrown's.
"""

from __future__ import annotations

import argparse

from toolbox import seed
from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import run
from toolbox.scripts.ddb_common import add_page_options, print_page, require_table, split_target, target


def main(argv: list[str], *, prog: str = "bin/ddb/patterns/list-conversations",
         description: str = __doc__.splitlines()[0],
         columns: tuple[str, ...] = ("created_at", "handle", "uuid", "message")) -> int:
    """List a user's conversations (pattern B) with the given columns and the capacity consumed."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("words", nargs="*", metavar="[prod] [HANDLE]")
    parser.add_argument("--user-uuid", metavar="UUID", help="a user's uuid instead of a handle")
    add_page_options(parser)
    args = parser.parse_args(argv)
    target_name, handles = split_target(parser, args.words)
    if len(handles) > 1 or (handles and args.user_uuid):
        parser.error("give one handle or --user-uuid")
    t = target(target_name)
    require_table(t)
    user_uuid = args.user_uuid
    if not user_uuid:
        [user] = seed.users_by_handle(t.config.connection_url, handles or seed.DEMO_HANDLES[:1])
        user_uuid = user["uuid"]
    with consumed_capacity(t.client) as capacity:
        page = t.messages.list_message_groups(user_uuid, limit=args.limit, before=args.before)
    print_page(page, capacity, list(columns), args.json)
    return 0


if __name__ == "__main__":
    run(main)
