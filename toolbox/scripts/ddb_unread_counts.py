"""bin/ddb/patterns/unread-counts [prod] [HANDLE | --user-uuid UUID]: a user's unread counts, with their cost.

Read state rides on the conversation rows, so this is pattern B itself: one
Query, no read per conversation. Without arguments: andrewbrown.
"""

from __future__ import annotations

from toolbox.scripts import ddb_list_conversations
from toolbox.scripts.common import run


def main(argv: list[str]) -> int:
    """Print each conversation's unread count and the other side's read marker."""
    return ddb_list_conversations.main(argv, prog="bin/ddb/patterns/unread-counts",
                                       description=__doc__.splitlines()[0],
                                       columns=("handle", "unread_count", "peer_last_read_at", "uuid"))


if __name__ == "__main__":
    run(main)
