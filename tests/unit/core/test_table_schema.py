"""decode_batch with the bronze table's schema: it, not the batch's first schema, decides what conflicts.

Without it, a batch whose first event carries an incompatible change (a decimal column arriving as text while
bronze holds a decimal) made the events that still fit bronze the "later schema" and rejected them, and the
writer then rejected the text events against the table: the whole batch was quarantined.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pyarrow as pa
import pytest

from cdcwh.core import RawRecord, RejectReason, decode_batch

TOPIC = "shop.public.money"
ID = {"type": "int64", "optional": False, "field": "id"}
AMOUNT = {
    "type": "bytes",
    "optional": True,
    "field": "amount",
    "name": "org.apache.kafka.connect.data.Decimal",
    "parameters": {"scale": "2", "connect.decimal.precision": "10"},
}
AMOUNT_TEXT = {"type": "string", "optional": True, "field": "amount"}
NOTE = {"type": "string", "optional": True, "field": "note"}


def record(offset: int, fields: list[dict[str, Any]], after: dict[str, Any]) -> RawRecord:
    row = {"type": "struct", "fields": fields, "optional": True, "name": "money.Value"}
    schema = {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
        "optional": False,
        "name": "money.Envelope",
    }
    value = orjson.dumps({"schema": schema, "payload": {"before": None, "after": after, "op": "c"}})
    return RawRecord(TOPIC, 0, offset, 1_700_000_000_000, orjson.dumps({"id": after["id"]}), value)


def decimal(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes(4, "big", signed=True)).decode()


def bronze_schema() -> pa.Schema:
    """The table as a first batch of decimal events created it (data and metadata columns)."""
    first = decode_batch([record(0, [ID, AMOUNT], {"id": 0, "amount": decimal(1)})], {})
    return first.tables[TOPIC].schema


def text_first() -> list[RawRecord]:
    return [
        record(1, [ID, AMOUNT_TEXT], {"id": 1, "amount": "1.50"}),
        record(2, [ID, AMOUNT], {"id": 2, "amount": decimal(250)}),
        record(3, [ID, AMOUNT_TEXT], {"id": 3, "amount": "3.50"}),
        record(4, [ID, AMOUNT, NOTE], {"id": 4, "amount": decimal(450), "note": "new column"}),
    ]


def test_the_table_schema_decides_which_events_conflict() -> None:
    batch = decode_batch(text_first(), {}, schemas={TOPIC: bronze_schema()})
    table = batch.tables[TOPIC]
    assert table.column("__offset").to_pylist() == [2, 4]
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    assert table.column("note").to_pylist() == [None, "new column"]
    assert [(r.offset, r.reason) for r in batch.rejected] == [
        (1, RejectReason.SCHEMA_CONFLICT),
        (3, RejectReason.SCHEMA_CONFLICT),
    ]
    assert all("amount" in r.detail and "bronze table" in r.detail for r in batch.rejected)


def test_without_the_table_schema_the_first_schema_of_the_batch_wins() -> None:
    batch = decode_batch(text_first(), {})
    assert batch.tables[TOPIC].column("__offset").to_pylist() == [1, 3]
    assert [r.offset for r in batch.rejected] == [2, 4]


def test_a_batch_that_fits_the_table_is_unchanged_by_it() -> None:
    records = [r for r in text_first() if r.offset in (2, 4)]
    with_schema = decode_batch(records, {}, schemas={TOPIC: bronze_schema()})
    without = decode_batch(records, {})
    assert with_schema.rejected == without.rejected == []
    assert with_schema.tables[TOPIC].equals(without.tables[TOPIC])


@pytest.mark.parametrize("other_topic", ["shop.public.other", TOPIC])
def test_widenings_against_the_table_are_accepted(other_topic: str) -> None:
    narrow = bronze_schema()
    amount = narrow.get_field_index("amount")
    wide = narrow.set(amount, pa.field("amount", pa.decimal128(12, 2)))
    batch = decode_batch(
        [record(5, [ID, AMOUNT], {"id": 5, "amount": decimal(7)})], {}, schemas={other_topic: wide}
    )
    assert batch.rejected == []
    assert batch.tables[TOPIC].column("__offset").to_pylist() == [5]
