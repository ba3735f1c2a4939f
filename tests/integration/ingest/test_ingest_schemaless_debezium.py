"""Real Debezium 3.6.3 output without the schema envelope (``key/value.converter.schemas.enable=false``,
tests/fixtures/debezium/type_zoo_schemaless.jsonl) lands through the bronze writer.

Without schemas the decoder types what a table contract declares and infers the rest from JSON alone
(docs/decoding.md, "Schemaless events"): nothing crashes, every record lands or is quarantined with a
documented reason, and no value is reinterpreted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.config import Settings
from cdcwh.core.contract import parse_contract
from cdcwh.ingest.bronze import IcebergBronzeWriter
from tests.support.debezium import by_id, captured, table_rows

TOPIC = "zoo.public.type_zoo"
UTC = dt.UTC


def land(tmp_path: Path, contracts: dict[str, Any]) -> tuple[Any, Settings, pa.Table]:
    settings = Settings(data_dir=tmp_path / "data")
    bronze = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, contracts, max_value_bytes=10_000_000
    )
    result = bronze.land(captured("type_zoo_schemaless"))
    return result, settings, table_rows(settings, bronze_table_name(TOPIC))


def test_the_capture_is_schemaless() -> None:
    records = captured("type_zoo_schemaless")
    assert len(records) == 14
    for record in records:
        assert record.key is not None and "schema" not in json.loads(record.key)
        if record.value is not None:
            assert set(json.loads(record.value)) >= {"before", "after", "source", "op"}


def test_without_a_contract_values_land_as_their_json_types(tmp_path: Path) -> None:
    result, _, bronze = land(tmp_path, {})
    assert result.quarantined == []
    assert sum(result.landed.values()) == 14  # 13 events and the tombstone after the delete
    types = {f.name: f.type for f in bronze.schema}
    assert types["id"] == pa.int64()  # all integers -> int64 (no contract says int32)
    assert types["c_bigint"] == pa.int64()
    assert types["c_boolean"] == pa.bool_()
    assert pa.types.is_large_string(types["c_numeric_10_2"])  # base64 text, never decoded without a type
    assert pa.types.is_large_string(types["c_real"])  # 1.5 and "Infinity": mixed kinds -> JSON text
    assert "c_xml" not in types  # null in every event: left out, reads as null
    rows = by_id(bronze)
    assert rows[1]["c_numeric_10_2"] == "SZYC0w=="
    assert json.loads(rows[1]["c_numeric"]) == {"scale": 4, "value": "ALxhTg=="}
    assert rows[1]["c_real"] == "1.5" and rows[3]["c_real"] == "Infinity"
    assert rows[1]["c_timestamptz"] == "2024-02-29T11:45:30.123456Z"  # ISO text stays text
    assert rows[1]["c_timestamp"] == 1709214330123456  # MicroTimestamp: an integer
    assert json.loads(rows[1]["c_int_array"]) == [1, 2, 3]
    assert rows[1]["c_bigint"] == 9007199254740993  # beyond 2^53, exact
    assert rows[3]["c_bigint"] == 2**63 - 1
    # the key: inferred too, and the delete's before image (key + nulls) kept as sent
    deletes = [r for r in bronze.to_pylist() if r["__op"] == "d"]
    assert [d["__key"] for d in deletes] == [{"id": 8}]
    assert deletes[0]["__before"]["id"] == 8 and deletes[0]["__before"]["c_text"] is None
    snapshot = {r["__snapshot"] for r in bronze.to_pylist() if r["__op"] == "r"}
    assert snapshot == {"first", "true", "last"}


def test_with_a_contract_the_declared_columns_are_typed(tmp_path: Path) -> None:
    contract = parse_contract(
        {
            "key": ["id"],
            "columns": {
                "id": {"type": "int32", "nullable": False},
                "c_numeric_10_2": {"type": "decimal(10,2)"},
                "c_money": {"type": "decimal(38,2)"},
                "c_date": {"type": "date"},
                "c_time": {"type": "time"},
                "c_timestamp": {"type": "timestamp"},
                "c_timestamp_3": {"type": "timestamp", "semantic": "io.debezium.time.Timestamp"},
                "c_timestamptz": {"type": "timestamptz"},
                "c_double": {"type": "float64"},
                "c_uuid": {"type": "uuid"},
            },
        },
        topic=TOPIC,
    )
    result, _, bronze = land(tmp_path, {TOPIC: contract})
    assert result.quarantined == []
    assert sum(result.landed.values()) == 14
    types = {f.name: f.type for f in bronze.schema}
    assert types["id"] == pa.int32() and types["c_numeric_10_2"] == pa.decimal128(10, 2)
    assert bronze.column_names[:10] == list(contract.columns)  # contract columns first, in its order
    rows = by_id(bronze)
    assert rows[1]["c_numeric_10_2"] == Decimal("12345678.91")
    assert rows[3]["c_money"] == Decimal("92233720368547758.07")
    assert rows[1]["c_date"] == dt.date(2024, 2, 29)
    assert rows[1]["c_time"] == dt.time(13, 45, 30, 123456)
    assert rows[1]["c_timestamp_3"] == dt.datetime(2024, 2, 29, 13, 45, 30, 123000)  # noqa: DTZ001
    assert rows[1]["c_timestamptz"] == dt.datetime(2024, 2, 29, 11, 45, 30, 123456, tzinfo=UTC)
    top = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for infinite in (3, 7):  # +infinity: the same sentinels as with schemas
        assert rows[infinite]["c_timestamptz"] == top
        assert rows[infinite]["c_timestamp"] == top.replace(tzinfo=None)
        assert rows[infinite]["c_date"] == dt.date(9999, 12, 31)
        assert math.isnan(rows[infinite]["c_double"])
    assert rows[4]["c_date"] == rows[8]["c_date"] == dt.date(1, 1, 1)
    assert rows[1]["c_time"] == rows[6]["c_time"]
    # a column the contract does not list is still inferred
    assert rows[1]["c_text"] == "héllo, wörld ✓"
