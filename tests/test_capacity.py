"""toolbox/capacity.py: AWS on-demand pricing rules, checked against figures computed by hand."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from toolbox import capacity
from toolbox.capacity import CapacityMeter, call_cost, item_size


def sized(size: int, **extra) -> dict:
    """An item in attribute-value form of exactly `size` bytes (pk + sk + a padding string)."""
    item = {"pk": {"S": "MSG#g"}, "sk": {"S": "1"}, **extra}
    pad = size - item_size(item) - len("pad")
    assert pad >= 0
    return {**item, "pad": {"S": "x" * pad}}


def test_item_size_counts_names_and_values():
    # GIVEN attribute names and values of each kind WHEN sized THEN as AWS counts them by hand
    assert item_size({"a": {"S": "hello"}}) == 1 + 5
    assert item_size({"count": {"N": "12345"}}) == 5 + (3 + 1)          # ceil(5 digits / 2) + 1
    assert item_size({"ok": {"BOOL": True}, "n": {"NULL": True}}) == (2 + 1) + (1 + 1)
    assert item_size({"m": {"M": {"k": {"S": "vv"}}}}) == 1 + 3 + (1 + 2 + 1)
    assert item_size(sized(1500)) == 1500


def test_reads_round_up_per_4_kb_and_halve_when_eventually_consistent():
    assert capacity.read_units(0, consistent=True) == 1.0            # a miss still costs one step
    assert capacity.read_units(4096, consistent=True) == 1.0
    assert capacity.read_units(4097, consistent=True) == 2.0
    assert capacity.read_units(4097, consistent=False) == 1.0
    assert capacity.read_units(12 * 1024, consistent=False) == 1.5


def test_query_rounds_the_sum_of_its_items_get_rounds_each_item():
    # GIVEN three 1,500-byte items: 4,500 bytes together
    items = [sized(1500) for _ in range(3)]
    # THEN one eventually consistent Query costs 2 steps of 4 KB at 0.5, three GetItems 0.5 each
    assert capacity.query_cost(items, consistent=False) == 1.0
    assert sum(capacity.get_cost(i, consistent=False) for i in items) == 1.5


def test_writes_round_up_per_kb_double_in_transactions_and_add_index_entries():
    assert capacity.write_units(1024) == 1
    assert capacity.write_units(1025) == 2
    assert capacity.write_units(1025, transactional=True) == 4
    plain, row = sized(1500), sized(1500, message_group_uuid={"S": "g"})
    assert capacity.put_cost(plain) == 2                              # 2 KB, not in the index
    assert capacity.put_cost(row) == 2 + 2                            # + its 2 KB index entry
    assert capacity.put_cost(row, transactional=True) == 4 + 2        # index writes are never transactional
    assert capacity.delete_cost(row, transactional=True) == 4 + 2


def test_a_failed_conditional_put_costs_the_item_in_the_way():
    # GIVEN PutItem answers ConditionalCheckFailed, with and without the existing item (ALL_OLD)
    params = {"TableName": "t", "Item": sized(300)}
    refused = {"Error": {"Code": "ConditionalCheckFailedException"}, "Item": sized(2500)}
    assert call_cost("PutItem", params, refused) == 3                 # 2,500 bytes: 3 units
    assert call_cost("PutItem", params, {"Error": {"Code": "ConditionalCheckFailedException"}}) == 1
    # AND a call refused before touching an item (validation) costs nothing
    assert call_cost("PutItem", params, {"Error": {"Code": "ValidationException"}}) == 0


def test_a_cancelled_transaction_costs_every_action_without_index_entries():
    row = sized(500, message_group_uuid={"S": "g"})
    actions = [{"Put": {"Item": row}}, {"Put": {"Item": sized(2100)}},
               {"Delete": {"Key": {"pk": {"S": "GRP#u"}, "sk": {"S": "1"}}}}]
    # committed: 2 + 1 (index) for the row, 3 KB x 2 for the message, the delete priced as the largest put (3 KB)
    # x 2 + its index entry 3
    assert capacity.committed_transaction_cost(actions) == (2 + 1) + 6 + (6 + 3)
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": sized(3500)}, {"Code": "None"}]
    # cancelled: 2 for the row, the failed put priced at the larger item (4 KB x 2), the delete 3 KB x 2
    assert capacity.cancelled_transaction_cost(actions, reasons) == 2 + 8 + 6
    parsed = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
    assert call_cost("TransactWriteItems", {"TransactItems": actions}, parsed) == 16


def test_an_update_costs_a_write_and_one_more_for_an_indexed_item():
    marker = {"Key": {"pk": {"S": "MBR#g"}, "sk": {"S": "u"}}}
    row = {"Key": {"pk": {"S": "GRP#u"}, "sk": {"S": "1"}}}
    answer = {"Attributes": {"last_read_at": {"S": "2026-01-01T00:00:00.000000+00:00"}}}
    assert call_cost("UpdateItem", marker, answer) == 1
    assert call_cost("UpdateItem", row, answer) == 2                  # + the row's index entry


def test_batch_write_bills_only_processed_items():
    items = [sized(900, sk={"S": str(n)}) for n in range(3)]
    params = {"RequestItems": {"t": [{"PutRequest": {"Item": i}} for i in items]}}
    parsed = {"UnprocessedItems": {"t": [{"PutRequest": {"Item": dict(items[1])}}]}}
    assert call_cost("BatchWriteItem", params, parsed) == 2


@pytest.mark.usefixtures("stack")
def test_the_meter_prices_refused_writes_against_dynamodb_local(config, ddb_client):
    # GIVEN a metered client and an item already in the table
    meter = CapacityMeter(ddb_client)
    item = {"pk": {"S": f"MSG#{uuid.uuid4()}"}, "sk": {"S": "2026-01-01T00:00:00.000000+00:00"},
            "message": {"S": "y" * 1500}}
    ddb_client.put_item(TableName=config.ddb_message_table, Item=item)
    assert meter.total == 2
    # WHEN the same key is put again under attribute_not_exists, and refused
    meter.reset()
    with pytest.raises(ClientError):
        ddb_client.put_item(TableName=config.ddb_message_table, Item={**item, "message": {"S": "z"}},
                            ConditionExpression="attribute_not_exists(pk)",
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
    # THEN the refusal is billed at the size of the item in the way (2 KB)
    assert meter.calls == [("PutItem (failed)", 2)]
