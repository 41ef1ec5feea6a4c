"""The table's definition, and creating, deleting and checking it."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from backend_flask.lib.ddb.calls import error_code, translate_errors
from backend_flask.lib.ddb.keys import GROUP_INDEX, TABLE_NAME, TTL_ATTRIBUTE

log = logging.getLogger(__name__)


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


def list_tables(client) -> list[str]:
    """Return the names of every table the endpoint has."""
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    with translate_errors():
        while True:
            response = client.list_tables(**kwargs)
            names.extend(response.get("TableNames", []))
            if not response.get("LastEvaluatedTableName"):
                return names
            kwargs["ExclusiveStartTableName"] = response["LastEvaluatedTableName"]


class SchemaMixin:
    """Create, delete and check the table."""

    client: Any
    name: str

    def create(self) -> bool:
        """Create the table with TTL on idempotency items and wait until it is active; False if it existed."""
        with translate_errors():
            try:
                self.client.create_table(**table_definition(self.name))
            except ClientError as exc:
                if error_code(exc) == "ResourceInUseException":
                    return False
                raise
            self.client.get_waiter("table_exists").wait(TableName=self.name, WaiterConfig={"Delay": 1})
            # Idempotency items expire on their own; a table without TTL still works, it only keeps them.
            try:
                self.client.update_time_to_live(TableName=self.name, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
            except ClientError as exc:
                log.warning("could not enable TTL on %s: %s", self.name, exc)
        log.info("created table %s", self.name)
        return True

    def delete(self) -> bool:
        """Delete the table; return False if it did not exist."""
        with translate_errors():
            try:
                self.client.delete_table(TableName=self.name)
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return False
                raise
            self.client.get_waiter("table_not_exists").wait(TableName=self.name, WaiterConfig={"Delay": 1})
        return True

    def ping(self) -> None:
        """Raise DynamoDBUnavailable (TableMissing if it does not exist) unless the table answers."""
        with translate_errors():
            self.client.describe_table(TableName=self.name)
