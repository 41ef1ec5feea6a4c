"""bin/ddb/patterns/get-conversation [prod] [HANDLE_A HANDLE_B | --group UUID]: pattern A, with its cost.

Prints the latest page of a conversation, oldest first, and the capacity it
consumed. Without arguments: the conversation of andrewbrown and bayko.
"""

from __future__ import annotations

import argparse

from backend_flask.lib import ddb, ddb_seed
from backend_flask.lib.errors import NotFound
from backend_flask.scripts.common import ScriptError, run
from backend_flask.scripts.ddb_common import add_page_options, print_page, require_table, split_target, target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/ddb/patterns/get-conversation", description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", metavar="[prod] [HANDLE_A HANDLE_B]")
    parser.add_argument("--group", metavar="UUID", help="a message_group_uuid instead of two handles")
    add_page_options(parser)
    args = parser.parse_args(argv)
    target_name, handles = split_target(parser, args.words)
    if handles and (len(handles) != 2 or args.group):
        parser.error("give two handles or --group, not both")
    t = target(target_name)
    require_table(t)
    group = args.group
    if not group:
        first, second = ddb_seed.users_by_handle(t.config.connection_url, handles or ddb_seed.DEMO_HANDLES)
        group = ddb.pair_group_uuid(first["uuid"], second["uuid"])
    capacity: list[dict] = []
    try:
        page = ddb.list_messages(t.client, t.table, group, limit=args.limit, before=args.before,
                                 capacity=capacity)
    except NotFound as exc:
        raise ScriptError(f"{group!r} is not a conversation id") from exc
    print_page(page, capacity, ["created_at", "handle", "message"], args.json)
    return 0


if __name__ == "__main__":
    run(main)
