"""What the bin/ddb scripts share: the target's table, printing items and their cost."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from backend_flask.config import Config
from backend_flask.lib import ddb
from backend_flask.lib.ddb import MessagesTable
from backend_flask.lib.errors import TableMissing
from toolbox.scripts.common import ScriptError, config_for, ddb_client


@dataclass
class Target:
    """Where a script works: settings, a DynamoDB client and the table name."""

    name: str
    config: Config
    messages: MessagesTable

    @property
    def client(self) -> Any:
        """The target's DynamoDB client."""
        return self.messages.client

    @property
    def table(self) -> str:
        """The table's name."""
        return self.messages.name

    @property
    def where(self) -> str:
        """Describe the endpoint for messages: the local URL or the AWS region."""
        return self.config.aws_endpoint_url or f"AWS {self.config.aws_region}"


def target(name: str) -> Target:
    """Return the target `local` or `prod` with its client."""
    config = config_for(name)
    return Target(name, config, MessagesTable(ddb_client(config), config.ddb_message_table))


def require_table(t: Target) -> None:
    """Fail with one line unless the table exists."""
    try:
        t.messages.ping()
    except TableMissing as exc:
        raise ScriptError(f"table {t.table} does not exist at {t.where}: run bin/ddb/schema-load") from exc


def split_target(parser: argparse.ArgumentParser, words: list[str]) -> tuple[str, list[str]]:
    """Split optional leading `local`/`prod` from other positional words."""
    if words and words[0] in ("local", "prod"):
        return words[0], words[1:]
    return "local", words


def page_limit(raw: str) -> int:
    """Parse --limit: an integer in 1..MAX_LIMIT, or a usage error (never silently clamped)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if not 1 <= value <= ddb.MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1..{ddb.MAX_LIMIT} (a page is at most {ddb.MAX_LIMIT} items), "
                                         f"not {value}")
    return value


def add_page_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of the pattern scripts that print one page: --limit, --before, --json."""
    parser.add_argument("--limit", type=page_limit, default=ddb.DEFAULT_LIMIT, help=f"page size, 1..{ddb.MAX_LIMIT}")
    parser.add_argument("--before", metavar="CURSOR", help="the cursor of an older page")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot show {type(value).__name__}")


def dumps(value: Any) -> str:
    """Return JSON for items read from DynamoDB (numbers are Decimals there)."""
    return json.dumps(value, default=_json_default, sort_keys=True)


def capacity_line(capacity: Iterable[dict]) -> str:
    """Summarise ConsumedCapacity dicts: total units and calls, and what the GSI took of them."""
    calls, total, index = 0, 0.0, 0.0
    for c in capacity:
        calls += 1
        total += c.get("CapacityUnits", 0.0)
        index += sum(v.get("CapacityUnits", 0.0) for v in (c.get("GlobalSecondaryIndexes") or {}).values())
    line = f"consumed capacity: {total:g} units in {calls} call{'s' if calls != 1 else ''}"
    return line + (f" ({index:g} on {ddb.GROUP_INDEX})" if index else "")


def print_page(page: dict, capacity: list[dict], columns: list[str], as_json: bool) -> None:
    """Print a page of items and its cost, as aligned columns or as one JSON document."""
    if as_json:
        print(dumps({"items": page["items"], "next": page["next"], "consumed_capacity": capacity}))
        return
    for item in page["items"]:
        print("  ".join(f"{str(item.get(c, '')):<32}" if c == "created_at" else f"{str(item.get(c, '')):<16}"
                        for c in columns[:-1]) + "  " + str(item.get(columns[-1], "")))
    print(f"items: {len(page['items'])}" + (f"; older: --before {page['next']}" if page["next"] else ""))
    print(capacity_line(capacity), file=sys.stderr)
