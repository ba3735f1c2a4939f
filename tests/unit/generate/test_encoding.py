"""The Debezium encoding, field by field.

Expectations are written from the Debezium 2.7 PostgreSQL connector documentation, a captured 2.7.3.Final
record (``JsonConverter`` with ``schemas.enable=true``) and Kafka Connect's ``Decimal`` logical type (Java
``BigInteger.toByteArray``), not copied from the encoder's output.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from cdcwh.generate import SourceChange, encode
from cdcwh.generate.debezium import (
    encode_date,
    encode_decimal,
    encode_micro_timestamp,
    encode_zoned_timestamp,
)

PLACEHOLDER = "__debezium_unavailable_value"
NAIVE_EPOCH = datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None) - timedelta(days=10957)  # 1970-01-01


def change(table: str, op: str, **overrides: Any) -> SourceChange:
    values: dict[str, Any] = {
        "table": table,
        "op": op,
        "key": {"id": 7},
        "before": None,
        "after": None,
        "toasted": frozenset(),
        "lsn": 24_023_928,
        "tx_id": 555,
        "ts_ms": 1_767_225_600_123,
        "snapshot": "false",
        "last_commit_lsn": 24_023_800,
    }
    values.update(overrides)
    return SourceChange(**values)


PRODUCT = {
    "id": 7,
    "sku": "SKU-000007",
    "name": "Slim Kettle",
    "category": "kitchen",
    "price": Decimal("19.99"),
    "active": True,
    "description": "x" * 3000,
}
ORDER = {
    "id": 7,
    "customer_id": 3,
    "status": "placed",
    "order_date": date(2026, 1, 2),
    "created_at": datetime(2026, 1, 2, 3, 4, 5, 600007, tzinfo=UTC).replace(tzinfo=None),
}
PAYMENT = {
    "id": 7,
    "order_id": 9,
    "method": "coupon",
    "amount": Decimal("-0.01"),
    "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
}
CUSTOMER = {
    "id": 7,
    "email": "zoë.müller@example.com",
    "first_name": "Zoë",
    "last_name": "Müller",
    "segment": "home_office",
    "country": "DE",
    "created_at": datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
}


def value_of(record_value: bytes | None) -> dict[str, Any]:
    assert record_value is not None
    decoded: dict[str, Any] = json.loads(record_value)
    return decoded


def fields_of(struct: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["field"]: f for f in struct["fields"]}


# ---- semantic types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected_b64"),
    [
        (Decimal("0.00"), "AA=="),  # BigInteger.ZERO.toByteArray() == [0x00]
        (Decimal("1.00"), "ZA=="),  # 100 -> 0x64
        (Decimal("1.27"), "fw=="),  # 127 -> 0x7f
        (Decimal("1.28"), "AIA="),  # 128 -> 0x00 0x80 (sign byte needed)
        (Decimal("-0.01"), "/w=="),  # -1 -> 0xff
        (Decimal("-1.28"), "gA=="),  # -128 -> 0x80
        (Decimal("-1.29"), "/38="),  # -129 -> 0xff 0x7f
        (Decimal("19.99"), "B88="),  # 1999 -> 0x07 0xcf
    ],
)
def test_decimal_is_java_biginteger_bytes(value: Decimal, expected_b64: str) -> None:
    assert encode_decimal(value) == expected_b64


@pytest.mark.parametrize(
    "value",
    ["0", "0.01", "-0.01", "99999999.99", "-99999999.99", "12345678.90", "-32768.00", "327.67", "-327.68"],
)
def test_decimal_round_trips_with_minimal_length(value: str) -> None:
    raw = base64.b64decode(encode_decimal(Decimal(value)))
    assert Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-2) == Decimal(value)
    if len(raw) > 1:  # minimal: the first byte is not a redundant sign extension of the second
        assert not (raw[0] == 0x00 and raw[1] < 0x80) and not (raw[0] == 0xFF and raw[1] >= 0x80)


def test_decimal_rejects_more_than_two_places() -> None:
    with pytest.raises(ValueError, match="decimal places"):
        encode_decimal(Decimal("1.005"))


def test_zoned_timestamp_is_utc_with_z_and_six_fraction_digits() -> None:
    assert (
        encode_zoned_timestamp(datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC))
        == "2026-01-01T10:00:00.123456Z"
    )
    assert encode_zoned_timestamp(datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == "2026-01-01T10:00:00.000000Z"
    plus_two = datetime(2026, 1, 1, 1, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert encode_zoned_timestamp(plus_two) == "2025-12-31T23:30:00.000005Z"


def test_micro_timestamp_and_date_numbers() -> None:
    # 2026-01-01T00:00:00Z is 1,767,225,600 s after the epoch; day 20,454
    assert encode_micro_timestamp(NAIVE_EPOCH) == 0
    assert encode_micro_timestamp(NAIVE_EPOCH + timedelta(seconds=1_767_225_600, microseconds=1)) == (
        1_767_225_600_000_001
    )
    assert encode_date(date(1970, 1, 1)) == 0
    assert encode_date(date(2026, 1, 1)) == 20_454
    assert encode_date(date(1969, 12, 31)) == -1


def test_naive_and_aware_are_not_mixed_up() -> None:
    with pytest.raises(ValueError):
        encode_zoned_timestamp(NAIVE_EPOCH)
    with pytest.raises(ValueError):
        encode_micro_timestamp(datetime(2026, 1, 1, tzinfo=UTC))


# ---- key --------------------------------------------------------------------------------------------------


def test_key_bytes_exactly_as_jsonconverter_writes_them() -> None:
    [record] = encode(change("orders", "c", after=ORDER))
    assert record.topic == "shop.public.orders"
    assert record.key == (
        b'{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],'
        b'"optional":false,"name":"shop.public.orders.Key"},"payload":{"id":7}}'
    )
    [customer] = encode(change("customers", "c", after=CUSTOMER))
    assert json.loads(customer.key)["schema"]["fields"] == [
        {"type": "int32", "optional": False, "field": "id"}
    ]


# ---- value schema -----------------------------------------------------------------------------------------


SOURCE_FIELDS = [
    {"type": "string", "optional": False, "field": "version"},
    {"type": "string", "optional": False, "field": "connector"},
    {"type": "string", "optional": False, "field": "name"},
    {"type": "int64", "optional": False, "field": "ts_ms"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Enum",
        "version": 1,
        "parameters": {"allowed": "true,last,false,incremental"},
        "default": "false",
        "field": "snapshot",
    },
    {"type": "string", "optional": False, "field": "db"},
    {"type": "string", "optional": True, "field": "sequence"},
    {"type": "int64", "optional": True, "field": "ts_us"},
    {"type": "int64", "optional": True, "field": "ts_ns"},
    {"type": "string", "optional": False, "field": "schema"},
    {"type": "string", "optional": False, "field": "table"},
    {"type": "int64", "optional": True, "field": "txId"},
    {"type": "int64", "optional": True, "field": "lsn"},
    {"type": "int64", "optional": True, "field": "xmin"},
]


def test_envelope_schema() -> None:
    [record] = encode(change("products", "c", after=PRODUCT))
    value = value_of(record.value)
    assert list(value) == ["schema", "payload"]
    schema = value["schema"]
    assert (schema["type"], schema["optional"], schema["name"], schema["version"]) == (
        "struct",
        False,
        "shop.public.products.Envelope",
        2,
    )
    names = [f["field"] for f in schema["fields"]]
    assert names == ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]
    fields = fields_of(schema)
    for image in ("before", "after"):
        assert fields[image]["name"] == "shop.public.products.Value"
        assert fields[image]["optional"] is True
    source = fields["source"]
    assert (source["name"], source["optional"]) == ("io.debezium.connector.postgresql.Source", False)
    assert source["fields"] == SOURCE_FIELDS
    assert fields["transaction"] == {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "id"},
            {"type": "int64", "optional": False, "field": "total_order"},
            {"type": "int64", "optional": False, "field": "data_collection_order"},
        ],
        "optional": True,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    }
    assert fields["op"] == {"type": "string", "optional": False, "field": "op"}
    for ts in ("ts_ms", "ts_us", "ts_ns"):
        assert fields[ts] == {"type": "int64", "optional": True, "field": ts}


def test_row_schemas_carry_semantic_types() -> None:
    expected = {
        "products": [
            {"type": "int32", "optional": False, "field": "id"},
            {"type": "string", "optional": True, "field": "sku"},
            {"type": "string", "optional": True, "field": "name"},
            {"type": "string", "optional": True, "field": "category"},
            {
                "type": "bytes",
                "optional": True,
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {"scale": "2", "connect.decimal.precision": "10"},
                "field": "price",
            },
            {"type": "boolean", "optional": True, "field": "active"},
            {"type": "string", "optional": True, "field": "description"},
        ],
        "orders": [
            {"type": "int64", "optional": False, "field": "id"},
            {"type": "int32", "optional": True, "field": "customer_id"},
            {"type": "string", "optional": True, "field": "status"},
            {
                "type": "int32",
                "optional": True,
                "name": "io.debezium.time.Date",
                "version": 1,
                "field": "order_date",
            },
            {
                "type": "int64",
                "optional": True,
                "name": "io.debezium.time.MicroTimestamp",
                "version": 1,
                "field": "created_at",
            },
        ],
        "payments": [
            {"type": "int64", "optional": False, "field": "id"},
            {"type": "int64", "optional": True, "field": "order_id"},
            {"type": "string", "optional": True, "field": "method"},
            {
                "type": "bytes",
                "optional": True,
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {"scale": "2", "connect.decimal.precision": "10"},
                "field": "amount",
            },
            {
                "type": "string",
                "optional": True,
                "name": "io.debezium.time.ZonedTimestamp",
                "version": 1,
                "field": "created_at",
            },
        ],
    }
    rows = {"products": PRODUCT, "orders": ORDER, "payments": PAYMENT}
    for table, fields in expected.items():
        [record] = encode(change(table, "c", after=rows[table]))
        schema = fields_of(value_of(record.value)["schema"])
        assert schema["after"]["fields"] == fields, table
        assert schema["before"]["fields"] == fields, table
    [customer] = encode(change("customers", "c", after=CUSTOMER))
    names = [f["field"] for f in fields_of(value_of(customer.value)["schema"])["after"]["fields"]]
    assert names == ["id", "email", "first_name", "last_name", "segment", "country", "created_at"]


def test_json_key_order_follows_jsonconverter() -> None:
    [record] = encode(change("products", "c", after=PRODUCT))
    assert record.value is not None
    text = record.value.decode()
    price = (
        '{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,'
        '"parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"price"}'
    )
    assert price in text
    assert text.startswith('{"schema":{"type":"struct","fields":[{"type":"struct","fields":[')


# ---- payload ----------------------------------------------------------------------------------------------


def test_payload_values_and_source_block() -> None:
    [record] = encode(change("orders", "c", after=ORDER))
    payload = value_of(record.value)["payload"]
    assert list(payload) == ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]
    assert payload["before"] is None and payload["transaction"] is None and payload["op"] == "c"
    assert payload["after"] == {
        "id": 7,
        "customer_id": 3,
        "status": "placed",
        "order_date": 20_455,  # 2026-01-02
        "created_at": (1_767_225_600 + 86_400 + 3 * 3600 + 4 * 60 + 5) * 1_000_000 + 600_007,
    }
    source = payload["source"]
    assert list(source) == [f["field"] for f in SOURCE_FIELDS]
    assert source == {
        "version": source["version"],
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": 1_767_225_600_123,
        "snapshot": "false",
        "db": "shop",
        "sequence": '["24023800","24023928"]',
        "ts_us": 1_767_225_600_123_000,
        "ts_ns": 1_767_225_600_123_000_000,
        "schema": "public",
        "table": "orders",
        "txId": 555,
        "lsn": 24_023_928,
        "xmin": None,
    }
    assert source["version"].startswith(("2.", "3.")) and source["version"].endswith(".Final")
    assert payload["ts_ms"] >= source["ts_ms"]
    assert payload["ts_us"] == payload["ts_ms"] * 1000 and payload["ts_ns"] == payload["ts_us"] * 1000


def test_decimal_and_zoned_values_in_payload() -> None:
    [record] = encode(change("payments", "c", after=PAYMENT))
    after = value_of(record.value)["payload"]["after"]
    assert after["amount"] == "/w=="
    assert after["created_at"] == "2026-01-02T03:04:05.000000Z"
    [customer] = encode(change("customers", "c", after=CUSTOMER))
    assert value_of(customer.value)["payload"]["after"]["created_at"] == "2025-06-01T10:00:00.000001Z"


def test_non_ascii_text_is_raw_utf8() -> None:
    [record] = encode(change("customers", "c", after=CUSTOMER))
    assert record.value is not None
    assert "Müller".encode() in record.value and b"\\u00fc" not in record.value


@pytest.mark.parametrize(
    ("marker", "sequence"), [("true", '[null,"24023928"]'), ("last", '[null,"24023928"]')]
)
def test_snapshot_markers(marker: str, sequence: str) -> None:
    [record] = encode(change("orders", "r", after=ORDER, snapshot=marker, last_commit_lsn=None))
    payload = value_of(record.value)["payload"]
    assert payload["op"] == "r"
    assert payload["source"]["snapshot"] == marker
    assert payload["source"]["sequence"] == sequence


def test_delete_is_followed_by_a_tombstone_with_the_same_key() -> None:
    before = {"id": 7, "order_id": None, "method": None, "amount": None, "created_at": None}
    records = encode(change("payments", "d", before=before))
    assert len(records) == 2
    event, tombstone = records
    assert tombstone.value is None
    assert (tombstone.topic, tombstone.key) == (event.topic, event.key)
    payload = value_of(event.value)["payload"]
    assert payload["op"] == "d" and payload["after"] is None
    assert payload["before"] == before


def test_toast_placeholder_is_sent_verbatim() -> None:
    after = {**PRODUCT, "description": PLACEHOLDER}
    [record] = encode(change("products", "u", after=after, toasted=frozenset({"description"})))
    payload = value_of(record.value)["payload"]
    assert payload["before"] is None
    assert payload["after"]["description"] == PLACEHOLDER
    assert payload["after"]["price"] == "B88="


def test_ts_ms_override_stamps_source_and_processing_time() -> None:
    [record] = encode(change("orders", "u", after=ORDER), ts_ms=1_800_000_000_000)
    payload = value_of(record.value)["payload"]
    assert payload["source"]["ts_ms"] == 1_800_000_000_000
    assert payload["source"]["ts_us"] == 1_800_000_000_000_000
    assert payload["ts_ms"] >= 1_800_000_000_000


def test_schemaless_emits_bare_payloads() -> None:
    c = change("orders", "c", after=ORDER)
    [plain] = encode(c, schemaless=True)
    [wrapped] = encode(c)
    assert plain.key == b'{"id":7}'
    assert json.loads(plain.value or b"") == value_of(wrapped.value)["payload"]
    records = encode(change("orders", "d", before=dict.fromkeys(ORDER) | {"id": 7}), schemaless=True)
    assert [r.value is None for r in records] == [False, True]
    assert records[1].key == b'{"id":7}'


def test_prefix_and_schema_name_topics_and_schemas() -> None:
    [record] = encode(change("orders", "c", after=ORDER), prefix="gen1", schema="sales")
    assert record.topic == "gen1.sales.orders"
    assert json.loads(record.key)["schema"]["name"] == "gen1.sales.orders.Key"
    value = value_of(record.value)
    assert value["schema"]["name"] == "gen1.sales.orders.Envelope"
    assert fields_of(value["schema"])["after"]["name"] == "gen1.sales.orders.Value"
    assert value["payload"]["source"]["name"] == "gen1"
    assert value["payload"]["source"]["schema"] == "sales"


def test_serialisation_is_compact() -> None:
    [record] = encode(change("orders", "c", after=ORDER))
    assert record.value is not None
    assert b": " not in record.value and b", " not in record.value and b"\n" not in record.value
