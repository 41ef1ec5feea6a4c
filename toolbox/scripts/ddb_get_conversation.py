"""bin/ddb/patterns/get-conversation [prod] [HANDLE_A HANDLE_B | --group UUID]: pattern A, with its cost.

Prints the latest page of a conversation, oldest first, and the capacity it
consumed. Without arguments: the conversation of andrewbrown and bayko.
"""

from __future__ import annotations

import argparse
import uuid

from backend_flask.lib import ddb
from toolbox import seed
from toolbox.capacity import consumed_capacity
from toolbox.scripts.common import ScriptError, run
from toolbox.scripts.ddb_common import add_page_options, print_page, require_table, split_target, target


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
        first, second = seed.users_by_handle(t.config.connection_url, handles or seed.DEMO_HANDLES)
        group = ddb.pair_group_uuid(first["uuid"], second["uuid"])
    try:
        group = str(uuid.UUID(group))
    except ValueError as exc:
        raise ScriptError(f"{group!r} is not a conversation id") from exc
    with consumed_capacity(t.client) as capacity:
        page = t.messages.list_messages(group, limit=args.limit, before=args.before)
    print_page(page, capacity, ["created_at", "handle", "message"], args.json)
    return 0


if __name__ == "__main__":
    run(main)
