"""MySQL-shaped envelopes (tests/fixtures/debezium/mysql, hand-written from the Debezium MySQL connector
documentation): ``source`` with file/pos/row/gtid/server_id and no LSN, TIME as a signed duration, TINYINT,
BIGINT UNSIGNED in ``long`` and ``precise`` modes, ``<prefix>.<database>.<table>`` topics."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pyarrow as pa

from cdcwh.core import decode_batch
from cdcwh.core.envelope import clear_plan_caches
from cdcwh.core.plan import value_plan
from cdcwh.core.record import RejectReason
from tests.support.debezium import captured

TIME_MAX_US = 3_020_399_000_000  # 838:59:59
ORDERS = "shop.inventory.orders"
MYSQL_ORDERS = "mysql/mysql_orders"


def document(index: int) -> dict[str, Any]:
    value = captured(MYSQL_ORDERS)[index].value
    assert value is not None
    return dict(json.loads(value))


def test_the_fixture_follows_the_documented_mysql_source_block() -> None:
    source = document(2)["payload"]["source"]
    assert source["connector"] == "mysql" and "lsn" not in source and "txId" not in source
    assert {"file", "pos", "row", "gtid", "server_id", "thread", "query"} <= set(source)


def test_the_envelope_schema_marks_mysql_time_as_a_duration() -> None:
    schema = document(0)["schema"]
    plan = value_plan(schema)
    types = {f.name: f.codec.arrow_type for f in plan.fields}
    assert types["prep_time"] == pa.int64()
    # the same schema from the PostgreSQL connector: MicroTime is a time of day
    source = next(f for f in schema["fields"] if f["field"] == "source")
    source["name"] = "io.debezium.connector.postgresql.Source"
    assert {f.name: f.codec.arrow_type for f in value_plan(schema).fields}["prep_time"] == pa.time64("us")
    source["name"] = "io.debezium.connector.mariadb.Source"
    assert {f.name: f.codec.arrow_type for f in value_plan(schema).fields}["prep_time"] == pa.int64()


def test_mysql_events_decode_without_rejections() -> None:
    clear_plan_caches()
    batch = decode_batch(captured(MYSQL_ORDERS), {})
    assert batch.rejected == [] and batch.ignored == []
    orders = batch.tables[ORDERS]
    assert orders["__op"].to_pylist() == ["r", "r", "c", "c", "u", "d", "tombstone", "t"]
    assert orders["__lsn"].null_count == orders.num_rows  # no LSN: ordering falls to the Kafka offset
    assert orders["__tx_id"].null_count == orders.num_rows
    assert set(orders["__db"].to_pylist()) == {"inventory", None}  # the tombstone has no source
    assert orders["__schema"].null_count == orders.num_rows
    assert orders["prep_time"].to_pylist()[:5] == [
        45_000_000_000,
        0,
        -TIME_MAX_US,
        TIME_MAX_US,
        90_000_000_000,
    ]
    assert orders.schema.field("is_paid").type == pa.int32()  # TINYINT(1): INT8 -> int32, 0/1 kept
    assert orders["is_paid"].to_pylist()[:2] == [1, 0]
    assert orders.schema.field("qty").type == pa.int32()  # TINYINT UNSIGNED: INT16
    assert orders["qty"].to_pylist()[1] == 255
    assert orders["customer_ref"].to_pylist()[2:5] == [-1, -(2**63), 2**63 - 1]  # long mode: wrapped
    counters = batch.tables["shop.inventory.counters"]
    assert counters.schema.field("hits").type == pa.decimal128(20, 0)
    assert counters["hits"].to_pylist() == [Decimal(2**64 - 1), Decimal(2**63), Decimal(0)]


def test_a_time_of_day_out_of_range_is_still_rejected_for_postgresql() -> None:
    value = document(2)
    source = next(f for f in value["schema"]["fields"] if f["field"] == "source")
    source["name"] = "io.debezium.connector.postgresql.Source"
    value["payload"]["source"]["connector"] = "postgresql"
    record = captured(MYSQL_ORDERS)[2]._replace(value=json.dumps(value).encode())
    clear_plan_caches()
    batch = decode_batch([record], {})
    assert [r.reason for r in batch.rejected] == [RejectReason.TYPE_MISMATCH]
    assert "prep_time" in batch.rejected[0].detail and "not a time of day" in batch.rejected[0].detail


def test_schemaless_mysql_events_are_inferred() -> None:
    """Without the schema envelope nothing says TIME is a duration: the integer lands as int64 (no contract)
    or, with a contract, as its declared type (declare MySQL TIME as ``int64``, docs/decoding.md)."""
    plain = []
    for record in captured(MYSQL_ORDERS)[:6]:
        assert record.value is not None and record.key is not None
        value = json.loads(record.value)["payload"]
        key = json.loads(record.key)["payload"]
        plain.append(record._replace(value=json.dumps(value).encode(), key=json.dumps(key).encode()))
    batch = decode_batch(plain, {})
    assert batch.rejected == []
    orders = batch.tables[ORDERS]
    assert orders.schema.field("prep_time").type == pa.int64()
    assert orders["prep_time"].to_pylist()[2] == -TIME_MAX_US
