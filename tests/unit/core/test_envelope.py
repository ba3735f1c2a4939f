"""decode_batch: envelopes with and without schemas, every op, keys, metadata, TOAST, schemaless, unions.

Debezium JSON is written out by the small helpers below, the way the JSON converter lays it out.
"""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from cdcwh.core import RawRecord, RejectReason, decode_batch, parse_contract
from cdcwh.core.codec import TOAST_PLACEHOLDER

ORDERS = "shop.public.orders"
PRODUCTS = "shop.public.products"
UTC = dt.UTC
TS_MS = 1_700_000_000_123
TS_NS = 1_700_000_000_123_456_789  # > 2**53: a float would round it


def fld(field: str, ctype: str, optional: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": ctype, "optional": optional, "field": field, **extra}


ORDER_FIELDS = [
    fld("id", "int64", False),
    fld("customer_id", "int32"),
    fld("status", "string"),
    fld("order_date", "int32", name="io.debezium.time.Date", version=1),
    fld("created_at", "int64", name="io.debezium.time.MicroTimestamp", version=1),
]
PRICE = fld(
    "price",
    "bytes",
    name="org.apache.kafka.connect.data.Decimal",
    version=1,
    parameters={"scale": "2", "connect.decimal.precision": "10"},
)
PRODUCT_FIELDS = [fld("id", "int32", False), fld("name", "string"), PRICE, fld("description", "string")]


def envelope_schema(topic: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"type": "struct", "fields": fields, "optional": True, "name": f"{topic}.Value"}
    source = {
        "type": "struct",
        "fields": [fld("ts_ms", "int64", False), fld("lsn", "int64")],
        "optional": False,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
    }
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            source,
            fld("op", "string", False),
            fld("ts_ms", "int64"),
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }


def pg_source(table: str = "orders", **overrides: Any) -> dict[str, Any]:
    source = {
        "version": "2.7.0.Final",
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": TS_MS,
        "snapshot": "false",
        "db": "shop",
        "sequence": '["1","2"]',
        "ts_us": TS_MS * 1000,
        "ts_ns": TS_NS,
        "schema": "public",
        "table": table,
        "txId": 771,
        "lsn": 33_554_432,
        "xmin": None,
    }
    return {**source, **overrides}


def payload(
    op: str, after: Any = None, before: Any = None, source: Any = None, **extra: Any
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source or pg_source(),
        "op": op,
        "ts_ms": TS_MS + 5,
        **extra,
    }


def enveloped(topic: str, fields: list[dict[str, Any]], body: dict[str, Any]) -> bytes:
    return orjson.dumps({"schema": envelope_schema(topic, fields), "payload": body})


def key_bytes(key: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> bytes:
    if fields is None:
        return orjson.dumps(key)
    schema = {"type": "struct", "fields": fields, "optional": False, "name": "k.Key"}
    return orjson.dumps({"schema": schema, "payload": key})


def order_key(order_id: int) -> bytes:
    return key_bytes({"id": order_id}, [fld("id", "int64", False)])


def rec(
    value: bytes | None, key: bytes | None, offset: int, topic: str = ORDERS, partition: int = 0
) -> RawRecord:
    return RawRecord(topic, partition, offset, TS_MS + 10 + offset, key, value)


def order(order_id: int, status: str = "placed", **overrides: Any) -> dict[str, Any]:
    row = {"id": order_id, "customer_id": 7, "status": status, "order_date": 19_800, "created_at": -1_000_001}
    return {**row, **overrides}


def order_record(offset: int, op: str = "c", row: dict[str, Any] | None = None, **kw: Any) -> RawRecord:
    body = payload(op, after=row or order(offset))
    return rec(enveloped(ORDERS, ORDER_FIELDS, body), order_key((row or order(offset))["id"]), offset, **kw)


def b64_unscaled(unscaled: int) -> str:
    return base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)).decode()


def column(batch_table: pa.Table, name: str) -> list[Any]:
    return list(batch_table.column(name).to_pylist())


# -- ops, tombstones and layout ------------------------------------------------------------------------------


def test_every_op_and_tombstone_in_one_table() -> None:
    schema_fields = ORDER_FIELDS
    message_schema = {
        "type": "struct",
        "fields": [fld("op", "string", False), fld("ts_ms", "int64")],
        "name": "io.debezium.connector.postgresql.MessageValue",
        "optional": False,
    }
    message = {
        "op": "m",
        "ts_ms": TS_MS,
        "source": pg_source(table=""),
        "message": {"prefix": "p", "content": "AQ=="},
    }
    records = [
        rec(
            enveloped(
                ORDERS, schema_fields, payload("r", after=order(1), source=pg_source(snapshot="first"))
            ),
            order_key(1),
            0,
        ),
        rec(enveloped(ORDERS, schema_fields, payload("c", after=order(2))), order_key(2), 1),
        rec(enveloped(ORDERS, schema_fields, payload("u", after=order(2, "shipped"))), order_key(2), 2),
        rec(enveloped(ORDERS, schema_fields, payload("d", before=order(2))), order_key(2), 3),
        rec(None, order_key(2), 4),
        rec(enveloped(ORDERS, schema_fields, payload("t")), None, 5),
        rec(orjson.dumps({"schema": message_schema, "payload": message}), None, 6),
    ]
    batch = decode_batch(records, {})
    assert batch.rejected == []
    table = batch.tables[ORDERS]
    assert column(table, "__op") == ["r", "c", "u", "d", "tombstone", "t", "m"]
    assert column(table, "__offset") == [0, 1, 2, 3, 4, 5, 6]
    assert column(table, "status") == ["placed", "placed", "shipped", None, None, None, None]
    assert column(table, "id") == [1, 2, 2, None, None, None, None]
    assert column(table, "__key") == [{"id": 1}, {"id": 2}, {"id": 2}, {"id": 2}, {"id": 2}, None, None]
    befores = column(table, "__before")
    assert befores[3] is not None and befores[3]["id"] == 2 and befores[3]["status"] == "placed"
    assert [b is None for b in befores] == [True, True, True, False, True, True, True]
    assert column(table, "__snapshot")[:2] == ["first", "false"]


def test_bronze_layout_and_types() -> None:
    batch = decode_batch([order_record(0)], {})
    expected = pa.schema(
        [
            ("id", pa.int64()),
            ("customer_id", pa.int32()),
            ("status", pa.string()),
            ("order_date", pa.date32()),
            ("created_at", pa.timestamp("us")),
            ("__op", pa.string()),
            ("__key", pa.struct([("id", pa.int64())])),
            (
                "__before",
                pa.struct(
                    [
                        ("id", pa.int64()),
                        ("customer_id", pa.int32()),
                        ("status", pa.string()),
                        ("order_date", pa.date32()),
                        ("created_at", pa.timestamp("us")),
                    ]
                ),
            ),
            ("__toasted", pa.list_(pa.string())),
            ("__source_ts", pa.timestamp("us", tz="UTC")),
            ("__source_ts_ns", pa.int64()),
            ("__lsn", pa.int64()),
            ("__tx_id", pa.int64()),
            ("__snapshot", pa.string()),
            ("__db", pa.string()),
            ("__schema", pa.string()),
            ("__table", pa.string()),
            ("__topic", pa.string()),
            ("__partition", pa.int32()),
            ("__offset", pa.int64()),
            ("__kafka_ts", pa.timestamp("us", tz="UTC")),
        ]
    )
    assert batch.tables[ORDERS].schema.equals(expected)


def test_values_and_metadata_of_one_row() -> None:
    batch = decode_batch([order_record(41, partition=3)], {})
    row = batch.tables[ORDERS].to_pylist()[0]
    assert row["order_date"] == dt.date(1970, 1, 1) + dt.timedelta(days=19_800)
    assert row["created_at"] == dt.datetime(1969, 12, 31, 23, 59, 58, 999_999)  # noqa: DTZ001 - zone-less type
    assert row["__source_ts"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)
    assert row["__source_ts_ns"] == TS_NS
    assert (row["__lsn"], row["__tx_id"], row["__snapshot"]) == (33_554_432, 771, "false")
    assert (row["__db"], row["__schema"], row["__table"]) == ("shop", "public", "orders")
    assert (row["__topic"], row["__partition"], row["__offset"]) == (ORDERS, 3, 41)
    assert row["__kafka_ts"] == dt.datetime(2023, 11, 14, 22, 13, 20, 174_000, tzinfo=UTC)
    assert row["__toasted"] == []


def test_mysql_source_block_and_legacy_boolean_snapshot() -> None:
    mysql = {
        "version": "2.7.0.Final",
        "connector": "mysql",
        "name": "shop",
        "ts_ms": TS_MS,
        "snapshot": True,
        "db": "shop",
        "table": "orders",
        "server_id": 1,
        "gtid": None,
        "file": "binlog.000003",
        "pos": 1234,
        "row": 0,
        "thread": 7,
    }
    body = payload("c", after=order(1), source=mysql)
    batch = decode_batch([rec(enveloped(ORDERS, ORDER_FIELDS, body), order_key(1), 0)], {})
    row = batch.tables[ORDERS].to_pylist()[0]
    assert (row["__lsn"], row["__tx_id"], row["__schema"], row["__source_ts_ns"]) == (None, None, None, None)
    assert (row["__snapshot"], row["__db"], row["__table"]) == ("true", "shop", "orders")


def test_keys_with_and_without_schema() -> None:
    value = enveloped(ORDERS, ORDER_FIELDS, payload("c", after=order(5)))
    with_schema = decode_batch([rec(value, key_bytes({"id": 5}, [fld("id", "int32", False)]), 0)], {})
    schemaless = decode_batch([rec(value, key_bytes({"id": 5}), 0)], {})
    assert with_schema.tables[ORDERS].schema.field("__key").type == pa.struct([("id", pa.int32())])
    assert schemaless.tables[ORDERS].schema.field("__key").type == pa.struct([("id", pa.int64())])  # inferred
    assert column(schemaless.tables[ORDERS], "__key") == [{"id": 5}]


def test_keyless_table_without_contract_lands_without_a_key_column() -> None:
    """A table without a primary key: Debezium sends a null key. ``__key`` would be a struct without fields,
    which Parquet cannot store, so the column is left out (bronze reads it as null)."""
    records = [
        rec(enveloped(ORDERS, ORDER_FIELDS, payload("r", after=order(1))), None, 0),
        rec(enveloped(ORDERS, ORDER_FIELDS, payload("c", after=order(2))), None, 1),
        rec(enveloped(ORDERS, ORDER_FIELDS, payload("d", before=order(2))), None, 2),
        rec(None, None, 3),  # its tombstone: null key and null value
    ]
    batch = decode_batch(records, {})
    assert batch.rejected == []
    assert [i.offset for i in batch.ignored] == [3]
    table = batch.tables[ORDERS]
    assert "__key" not in table.column_names
    assert column(table, "__op") == ["r", "c", "d"]
    assert column(table, "__before")[2]["id"] == 2


def test_a_batch_with_some_keys_keeps_the_key_column() -> None:
    """Truncates have no key even on a keyed table; alone they leave ``__key`` out, with keyed rows it stays,
    null for them."""
    truncate = rec(enveloped(ORDERS, ORDER_FIELDS, payload("t")), None, 1)
    batch = decode_batch([order_record(0), truncate], {})
    assert column(batch.tables[ORDERS], "__key") == [{"id": 0}, None]
    alone = decode_batch([truncate], {})
    assert "__key" not in alone.tables[ORDERS].column_names


# -- TOAST ---------------------------------------------------------------------------------------------------


def test_toast_placeholder_is_null_and_listed() -> None:
    full = {"id": 1, "name": "Lamp", "price": b64_unscaled(1999), "description": "long text"}
    toasted = {**full, "description": TOAST_PLACEHOLDER}
    records = [
        rec(enveloped(PRODUCTS, PRODUCT_FIELDS, payload("c", after=full)), key_bytes({"id": 1}), 0, PRODUCTS),
        rec(
            enveloped(PRODUCTS, PRODUCT_FIELDS, payload("u", after=toasted)),
            key_bytes({"id": 1}),
            1,
            PRODUCTS,
        ),
    ]
    contract = parse_contract(
        {
            "key": ["id"],
            "columns": {
                "id": {"type": "int32", "nullable": False},
                "price": {"type": "decimal(10,2)", "min": 0},
                "description": {"type": "string", "nullable": False},
            },
        },
        topic=PRODUCTS,
    )
    batch = decode_batch(records, {PRODUCTS: contract})
    assert batch.rejected == []  # a TOASTed not-null column is unavailable, not null
    table = batch.tables[PRODUCTS]
    assert column(table, "description") == ["long text", None]
    assert column(table, "__toasted") == [[], ["description"]]
    assert column(table, "price") == [Decimal("19.99"), Decimal("19.99")]


# -- schemaless values ---------------------------------------------------------------------------------------

ORDERS_CONTRACT = {
    "key": ["id"],
    "columns": {
        "id": {"type": "int64", "nullable": False},
        "customer_id": {"type": "int32", "nullable": False},
        "status": {
            "type": "string",
            "accepted_values": ["placed", "shipped", "completed", "returned", "cancelled"],
        },
        "order_date": {"type": "date"},
        "created_at": {"type": "timestamp"},
        "total": {"type": "decimal(12,2)", "min": "0"},
        "paid_at": {"type": "timestamptz"},
    },
}


def test_schemaless_value_takes_types_from_the_contract() -> None:
    contract = parse_contract(ORDERS_CONTRACT, topic=ORDERS)
    row = order(9, total=b64_unscaled(123_456), paid_at="2024-05-01T10:00:00+02:00", coupon="SPRING")
    records = [rec(orjson.dumps(payload("c", after=row)), key_bytes({"id": 9}), 0)]
    batch = decode_batch(records, {ORDERS: contract})
    assert batch.rejected == []
    table = batch.tables[ORDERS]
    types = {name: table.schema.field(name).type for name in table.column_names if not name.startswith("__")}
    assert types == {
        "id": pa.int64(),
        "customer_id": pa.int32(),
        "status": pa.string(),
        "order_date": pa.date32(),
        "created_at": pa.timestamp("us"),
        "total": pa.decimal128(12, 2),
        "paid_at": pa.timestamp("us", tz="UTC"),
        "coupon": pa.string(),  # not in the contract: inferred
    }
    got = table.to_pylist()[0]
    assert got["total"] == Decimal("1234.56")
    assert got["paid_at"] == dt.datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert got["__key"] == {"id": 9}
    assert table.schema.field("__key").type == pa.struct([("id", pa.int64())])


def test_schemaless_unknown_table_is_inferred_conservatively() -> None:
    rows = [
        {
            "n": 1,
            "x": 1,
            "f": True,
            "s": "a",
            "obj": {"k": [1]},
            "nothing": None,
            "big": 2**64 - 1,
            "mix": "a",
        },
        {"n": 2, "x": 2.5, "f": False, "s": "b", "obj": [1, 2], "nothing": None, "big": 1, "mix": 3},
    ]
    records = [
        rec(orjson.dumps(payload("c", after=r)), key_bytes({"n": r["n"]}), i, "db.s.t")
        for i, r in enumerate(rows)
    ]
    batch = decode_batch(records, {})
    assert batch.rejected == []
    table = batch.tables["db.s.t"]
    data = [name for name in table.column_names if not name.startswith("__")]
    assert data == ["n", "x", "f", "s", "obj", "big", "mix"]  # all-null "nothing" is left out
    types = [table.schema.field(name).type for name in data]
    assert types == [pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.string(), pa.string(), pa.string()]
    assert column(table, "x") == [1.0, 2.5]
    assert column(table, "obj") == ['{"k":[1]}', "[1,2]"]
    assert column(table, "big") == [str(2**64 - 1), "1"]
    assert column(table, "mix") == ["a", "3"]


# -- several schemas of one topic in one batch ---------------------------------------------------------------


def test_added_column_and_widening_are_unioned_in_offset_order() -> None:
    widened = [
        fld("id", "int64", False),
        fld("customer_id", "int64"),
        *ORDER_FIELDS[2:],
        fld("note", "string"),
    ]
    newer = {**order(2), "customer_id": 2**40, "note": "gift"}
    records = [
        order_record(0),
        rec(enveloped(ORDERS, widened, payload("c", after=newer)), order_key(2), 1),
        order_record(2, row=order(3)),
    ]
    batch = decode_batch(records, {})
    assert batch.rejected == []
    table = batch.tables[ORDERS]
    assert table.schema.field("customer_id").type == pa.int64()
    assert column(table, "__offset") == [0, 1, 2]
    assert column(table, "customer_id") == [7, 2**40, 7]
    assert column(table, "note") == [None, "gift", None]
    assert table.column_names.index("note") < table.column_names.index("__op")


def test_incompatible_change_rejects_the_later_schema() -> None:
    changed = [*ORDER_FIELDS[:2], fld("status", "int32"), *ORDER_FIELDS[3:]]
    records = [
        order_record(0),
        rec(enveloped(ORDERS, changed, payload("c", after=order(2, status=3))), order_key(2), 1),
        order_record(2, row=order(3)),
        rec(enveloped(ORDERS, changed, payload("c", after=order(4, status=1))), order_key(4), 3),
    ]
    batch = decode_batch(records, {})
    assert column(batch.tables[ORDERS], "__offset") == [0, 2]
    assert [(r.offset, r.reason) for r in batch.rejected] == [
        (1, RejectReason.SCHEMA_CONFLICT),
        (3, RejectReason.SCHEMA_CONFLICT),
    ]
    assert "status" in batch.rejected[0].detail


def test_records_of_several_topics_and_partitions_keep_input_order() -> None:
    product = {"id": 1, "name": "Lamp", "price": b64_unscaled(5), "description": None}
    records = [
        order_record(10, partition=1),
        rec(
            enveloped(PRODUCTS, PRODUCT_FIELDS, payload("r", after=product)),
            key_bytes({"id": 1}),
            4,
            PRODUCTS,
        ),
        order_record(3, partition=0),
        order_record(11, partition=1),
    ]
    batch = decode_batch(records, {})
    assert column(batch.tables[ORDERS], "__offset") == [10, 3, 11]
    assert column(batch.tables[ORDERS], "__partition") == [1, 0, 1]
    assert column(batch.tables[PRODUCTS], "price") == [Decimal("0.05")]


# -- envelope byte layouts -----------------------------------------------------------------------------------


def test_pretty_printed_and_reordered_envelopes_decode() -> None:
    body = payload("c", after=order(1))
    pretty = orjson.dumps(
        {"schema": envelope_schema(ORDERS, ORDER_FIELDS), "payload": body}, option=orjson.OPT_INDENT_2
    )
    reordered = orjson.dumps({"payload": body, "schema": envelope_schema(ORDERS, ORDER_FIELDS)})
    batch = decode_batch([rec(pretty, order_key(1), 0), rec(reordered, order_key(1), 1), order_record(2)], {})
    assert batch.rejected == []
    assert column(batch.tables[ORDERS], "id") == [1, 1, 2]


def test_a_schema_containing_the_payload_separator_is_not_split_there() -> None:
    tricky = [
        *ORDER_FIELDS[:2],
        fld("status", "string", parameters={"x": "1", "payload": "2"}),
        *ORDER_FIELDS[3:],
    ]
    records = [
        rec(enveloped(ORDERS, tricky, payload("c", after=order(i))), order_key(i), i) for i in range(3)
    ]
    batch = decode_batch(records, {})
    assert batch.rejected == []
    assert column(batch.tables[ORDERS], "id") == [0, 1, 2]


def test_the_same_schema_bytes_across_batches_reuse_the_plan() -> None:
    first = decode_batch([order_record(0)], {})
    second = decode_batch([order_record(1)], {})
    assert first.tables[ORDERS].schema.equals(second.tables[ORDERS].schema)


@pytest.mark.parametrize("name", ["__op", "__offset"])
def test_a_column_named_like_metadata_is_rejected(name: str) -> None:
    fields = [*ORDER_FIELDS, fld(name, "string")]
    batch = decode_batch([rec(enveloped(ORDERS, fields, payload("c", after=order(1))), order_key(1), 0)], {})
    assert [r.reason for r in batch.rejected] == [RejectReason.INVALID_ENVELOPE]
