"""The `cruddur-messages` table: its definition and its access patterns (A–E).

Stateless functions over a boto3 DynamoDB client, returning plain dicts. Key
formats, the table and the index name are defined here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from backend_flask.lib.errors import DynamoDBUnavailable, NotFound

log = logging.getLogger(__name__)

TABLE_NAME = "cruddur-messages"
GROUP_INDEX = "message-group-sk-index"


def table_definition(table_name: str = TABLE_NAME) -> dict[str, Any]:
    """Return the CreateTable arguments: pk/sk, the group GSI, stream NEW_IMAGE, on demand."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "message_group_uuid", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [{
            "IndexName": GROUP_INDEX,
            "KeySchema": [
                {"AttributeName": "message_group_uuid", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


@contextlib.contextmanager
def translate_errors():
    """Turn a DynamoDB that cannot be reached into DynamoDBUnavailable."""
    try:
        yield
    except BotoConnectionError as exc:
        raise DynamoDBUnavailable(f"DynamoDB unreachable: {exc}") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise NotFound(f"table missing: {exc}", code="table_not_found") from exc
        if code in {"ProvisionedThroughputExceededException", "ThrottlingException",
                    "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"}:
            raise DynamoDBUnavailable(f"DynamoDB busy: {code}") from exc
        raise
    except BotoCoreError as exc:
        raise DynamoDBUnavailable(f"DynamoDB failed: {exc}") from exc


def create_table(client, table_name: str = TABLE_NAME) -> bool:
    """Create the table and wait until it is active; return False if it already existed."""
    with translate_errors():
        try:
            client.create_table(**table_definition(table_name))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceInUseException":
                return False
            raise
        client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})
    log.info("created table %s", table_name)
    return True


def delete_table(client, table_name: str = TABLE_NAME) -> bool:
    """Delete the table; return False if it did not exist."""
    with translate_errors():
        try:
            client.delete_table(TableName=table_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return False
            raise
        client.get_waiter("table_not_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1})
    return True


def ping(client, table_name: str = TABLE_NAME) -> None:
    """Raise DynamoDBUnavailable or NotFound unless the table answers."""
    with translate_errors():
        client.describe_table(TableName=table_name)
