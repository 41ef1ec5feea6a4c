"""The `cruddur-messages` table: its items, its access patterns (A–E) and its definition.

`MessagesTable(client, name)` is the only way in: one method per access
pattern. The modules beside this one split it by concern:

| module      | holds |
|-------------|-------|
| `keys`      | key formats, timestamps, item builders, the API's views of items |
| `cursors`   | opaque page cursors |
| `calls`     | error translation, conditional puts, transactions read by name |
| `schema`    | the table definition; create, delete, ping |
| `reads`     | A (a conversation's messages), B (my conversations), membership |
| `writes`    | C (start a conversation), D (append), idempotency |
| `markers`   | read markers and unread counts |
| `stream`    | E (settle both conversation rows when messages land or markers move) |
| `replay`    | what changed in a user's conversations since a time (event stream replay) |
| `tickets`   | one-time tickets that open an event stream |
| `table`     | `MessagesTable`, which puts them together |

Items (pk / sk, then what else they hold):

- conversation row, one per participant: `GRP#<owner uuid>` / position (the
  last message's time); `message_group_uuid`, `message`, `last_message_at`
  and the OTHER participant's `user_uuid`, `user_display_name`, `user_handle`.
- message: `MSG#<group uuid>` / created time; `message_uuid`, `message` and the
  sender's `user_uuid`, `user_display_name`, `user_handle`.
- membership: `MBR#<group uuid>` / member's user uuid; `created_at`. Written
  with the conversation, read strongly consistent before pattern D.
- idempotency: `IDEM#<sender uuid>` / the client's key; `result` (the first
  call's answer), `request` (fingerprint) and `expires_at` (TTL, one day).
- stream ticket: `TKT#<sha256 of the ticket>` / `TICKET`; the user it was
  issued to, `valid_until` (ms), `token_expires_at` and `expires_at` (TTL).

Only conversation rows carry a top-level `message_group_uuid`, so the GSI
`message-group-sk-index` holds nothing but conversation rows.

Importing this package imports boto3's types and the project's errors, never Flask.
"""

from backend_flask.lib.ddb.keys import (
    DEFAULT_LIMIT,
    GROUP_INDEX,
    GROUP_PREFIX,
    IDEMPOTENCY_PREFIX,
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    MEMBER_PREFIX,
    MESSAGE_PREFIX,
    TABLE_NAME,
    TICKET_PREFIX,
    TTL_ATTRIBUTE,
    from_item,
    is_timestamp,
    message_from_image,
    message_item,
    now_iso,
    pair_group_uuid,
    read_marker_from_image,
    to_iso,
    to_item,
)
from backend_flask.lib.ddb.schema import list_tables, table_definition
from backend_flask.lib.ddb.table import MessagesTable

__all__ = [
    "DEFAULT_LIMIT", "GROUP_INDEX", "GROUP_PREFIX", "IDEMPOTENCY_PREFIX", "MAX_CURSOR_LENGTH", "MAX_LIMIT",
    "MEMBER_PREFIX", "MESSAGE_PREFIX", "TABLE_NAME", "TICKET_PREFIX", "TTL_ATTRIBUTE",
    "MessagesTable", "from_item", "is_timestamp", "list_tables", "message_from_image", "message_item",
    "now_iso", "pair_group_uuid", "read_marker_from_image", "table_definition", "to_item", "to_iso",
]
