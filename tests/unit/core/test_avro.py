"""Avro records in the Confluent wire format, decoded by ``decode_batch`` (``cdcwh.core.avro``).

The golden test decodes ``type_zoo_avro.jsonl``, the real output of Confluent's AvroConverter in the Debezium
3.6.3 engine (its schemas registered in the test stand-in registry, tests/support/schema_registry_standin.py),
and compares it with ``type_zoo.jsonl``, the JsonConverter's output of the same workload: the bronze rows
must be the same, column for column and type for type. The failure modes use real records edited byte-wise
and small envelopes written with fastavro in the shape ``AvroData`` gives them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any

import pyarrow as pa
import pytest
from fastavro import parse_schema, schemaless_writer

from cdcwh.core import RawRecord, decode_batch
from cdcwh.core.avro import NO_SCHEMAS, WriterSchemas, schema_ids, to_connect
from cdcwh.core.record import RejectReason
from tests.support.avro_fixtures import captured_avro
from tests.support.debezium import captured

TOPIC = "zoo.public.type_zoo"
# what differs between two captures of the same workload: the database (named after the scenario), the
# source positions and clocks
VARYING = {"__db", "__lsn", "__tx_id", "__source_ts", "__source_ts_ns"}


def comparable(value: Any) -> Any:
    """``value`` with NaN replaced by a marker (NaN != NaN) so that lists of rows compare."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def test_real_avro_capture_decodes_to_the_same_bronze_rows_as_the_json_capture() -> None:
    records, schemas = captured_avro("type_zoo_avro")
    assert all(r.value is None or r.value[0] == 0 for r in records)  # really the Confluent wire format
    avro = decode_batch(records, {}, writer_schemas=schemas)
    json_batch = decode_batch(captured("type_zoo"), {})
    assert avro.rejected == [] and json_batch.rejected == []
    got, want = avro.tables[TOPIC], json_batch.tables[TOPIC]
    assert got.schema == want.schema
    columns = [c for c in want.column_names if c not in VARYING]
    assert comparable(got.select(columns).to_pylist()) == comparable(want.select(columns).to_pylist())
    assert got.num_rows == 14 and set(got["__op"].to_pylist()) == {"r", "c", "u", "d", "tombstone"}


def test_schema_ids_are_read_from_keys_and_values() -> None:
    records, schemas = captured_avro("type_zoo_avro")
    assert schema_ids(records) == set(schemas.by_id) == {1, 2}


def test_a_copy_with_other_schemas_does_not_reuse_the_readers_of_the_first() -> None:
    records, schemas = captured_avro("type_zoo_avro")
    assert decode_batch(records, {}, writer_schemas=schemas).rejected == []  # fills its fast path
    value_id = int.from_bytes(records[0].value[1:5], "big") if records[0].value else 0
    # the same ids, the value schema replaced by the key's: a copy must read with the schemas it holds
    other = dataclasses.replace(schemas, by_id={**schemas.by_id, value_id: schemas.by_id[3 - value_id]})
    assert other.ready == {}
    assert decode_batch(records, {}, writer_schemas=other).rejected != []


def real_value() -> tuple[RawRecord, WriterSchemas]:
    records, schemas = captured_avro("type_zoo_avro")
    return records[0], schemas


def rejected_as(record: RawRecord, schemas: WriterSchemas) -> tuple[RejectReason, str]:
    batch = decode_batch([record], {}, writer_schemas=schemas)
    assert batch.tables == {} and len(batch.rejected) == 1
    rejection = batch.rejected[0]
    assert rejection.value == record.value  # the original bytes are kept for a replay
    return rejection.reason, rejection.detail


def test_unknown_schema_id_is_quarantined() -> None:
    record, schemas = real_value()
    assert record.value is not None
    value = record.value[:1] + (999).to_bytes(4, "big") + record.value[5:]
    reason, detail = rejected_as(record._replace(value=value), schemas)
    assert reason == RejectReason.UNKNOWN_SCHEMA and "999" in detail


def test_no_registry_configured_is_unknown_schema_with_the_reason() -> None:
    record, _ = real_value()
    reason, detail = rejected_as(record, WriterSchemas(unavailable="CDCWH_SCHEMA_REGISTRY__URL is not set"))
    assert reason == RejectReason.UNKNOWN_SCHEMA and "CDCWH_SCHEMA_REGISTRY__URL" in detail
    assert rejected_as(record, NO_SCHEMAS)[0] == RejectReason.UNKNOWN_SCHEMA


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda v: v[:-40], "does not decode"),  # truncated body
        (lambda v: v + b"\x02\x04", "bytes after the Avro body"),
        (lambda v: v[:3], "too short"),
        (lambda v: b"\x01" + v[1:], "byte 0x01"),  # a wrong magic byte
    ],
    ids=["truncated", "trailing-bytes", "shorter-than-header", "wrong-magic"],
)
def test_malformed_avro_is_quarantined(edit: Any, expected: str) -> None:
    record, schemas = real_value()
    assert record.value is not None
    reason, detail = rejected_as(record._replace(value=edit(record.value)), schemas)
    assert reason == RejectReason.INVALID_AVRO and expected in detail


@pytest.mark.parametrize("garbage", [b"\x05\x00\x00\x00\x01\x02", b"\x01", b"\x1f junk"])
def test_binary_garbage_is_invalid_json_without_a_registry_and_invalid_avro_with_one(garbage: bytes) -> None:
    """A JSON-only deployment (no registry) keeps the reason it had before Avro support; with a registry
    configured, binary data with a wrong magic byte is a broken Avro producer."""
    record, schemas = real_value()
    assert rejected_as(record._replace(value=garbage), schemas)[0] == RejectReason.INVALID_AVRO
    for unconfigured in (NO_SCHEMAS, WriterSchemas(unavailable="CDCWH_SCHEMA_REGISTRY__URL is not set")):
        assert rejected_as(record._replace(value=garbage), unconfigured)[0] == RejectReason.INVALID_JSON


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(lambda v: v[:-40], "does not decode"), (lambda v: v + b"\x02", "bytes after the Avro body")],
    ids=["truncated", "trailing-bytes"],
)
def test_a_bad_record_costs_only_itself(edit: Any, expected: str) -> None:
    """Records before it with its schema id put that id on the batch's fast path: the bad one still gets
    its own reason."""
    records, schemas = captured_avro("type_zoo_avro")
    value = records[3].value
    assert value is not None and all(r.value and r.value[:5] == value[:5] for r in records[:3])
    records[3] = records[3]._replace(value=edit(value))
    batch = decode_batch(records, {}, writer_schemas=schemas)
    assert [r.offset for r in batch.rejected] == [3]
    assert batch.rejected[0].reason == RejectReason.INVALID_AVRO and expected in batch.rejected[0].detail
    assert batch.tables[TOPIC].num_rows == 13
    assert value[:5] in schemas.ready  # the good ones went by the fast path


# ---- hand-written envelopes in AvroData's shape --------------------------------------------------------


def envelope(fields: list[dict[str, Any]], name: str = "t") -> dict[str, Any]:
    """A Debezium envelope as ``AvroData`` writes it (before/after optional ``Value`` records)."""
    value = {"type": "record", "name": "Value", "fields": fields, "connect.name": f"s.public.{name}.Value"}
    source = {
        "type": "record",
        "name": "Source",
        "namespace": "io.debezium.connector.postgresql",
        "fields": [
            {"name": "ts_ms", "type": "long"},
            {"name": "db", "type": "string"},
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            {"name": "lsn", "type": ["null", "long"], "default": None},
        ],
        "connect.name": "io.debezium.connector.postgresql.Source",
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": f"s.public.{name}",
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "source", "type": source},
            {"name": "op", "type": "string"},
        ],
        "connect.name": f"s.public.{name}.Envelope",
    }


ID = {"name": "id", "type": "long"}


def encode(schema_id: int, schema: dict[str, Any], payload: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(out, parse_schema(json.loads(json.dumps(schema))), payload)
    return out.getvalue()


def event(row: dict[str, Any], op: str = "c") -> dict[str, Any]:
    source = {"ts_ms": 1_700_000_000_000, "db": "d", "schema": "public", "table": "t", "lsn": 1}
    return {"before": None, "after": row, "source": source, "op": op}


def record(offset: int, value: bytes) -> RawRecord:
    return RawRecord("s.public.t", 0, offset, 1_700_000_000_000, None, value)


def test_added_optional_field_in_a_new_schema_id_evolves_the_table() -> None:
    v1 = envelope([ID])
    v2 = envelope([ID, {"name": "note", "type": ["null", "string"], "default": None}])
    schemas = WriterSchemas({7: json.dumps(v1), 8: json.dumps(v2)})
    records = [
        record(0, encode(7, v1, event({"id": 1}))),
        record(1, encode(8, v2, event({"id": 2, "note": "x"}))),
    ]
    batch = decode_batch(records, {}, writer_schemas=schemas)
    assert batch.rejected == []
    table = batch.tables["s.public.t"]
    assert table.select(["id", "note"]).to_pylist() == [{"id": 1, "note": None}, {"id": 2, "note": "x"}]


def test_incompatible_schema_change_is_quarantined_as_schema_conflict() -> None:
    v1 = envelope([ID, {"name": "n", "type": ["null", "long"], "default": None}])
    v2 = envelope([ID, {"name": "n", "type": ["null", "string"], "default": None}])
    schemas = WriterSchemas({7: json.dumps(v1), 8: json.dumps(v2)})
    records = [
        record(0, encode(7, v1, event({"id": 1, "n": 5}))),
        record(1, encode(8, v2, event({"id": 2, "n": "five"}))),
    ]
    batch = decode_batch(records, {}, writer_schemas=schemas)
    assert [(r.offset, r.reason) for r in batch.rejected] == [(1, RejectReason.SCHEMA_CONFLICT)]
    assert batch.tables["s.public.t"]["n"].to_pylist() == [5]
    # against an existing bronze table whose n is int64, the string schema is the one rejected even alone
    bronze = pa.schema([("id", pa.int64()), ("n", pa.int64())])
    alone = decode_batch(records[1:], {}, writer_schemas=schemas, schemas={"s.public.t": bronze})
    assert [r.reason for r in alone.rejected] == [RejectReason.SCHEMA_CONFLICT]


def test_json_and_avro_records_mix_in_one_topic() -> None:
    schema = envelope([ID, {"name": "name", "type": ["null", "string"], "default": None}])
    avro_value = encode(3, schema, event({"id": 1, "name": "a"}))
    json_value = json.dumps(
        {
            "schema": {
                "type": "struct",
                "name": "s.public.t.Envelope",
                "fields": [
                    {
                        "field": "after",
                        "type": "struct",
                        "optional": True,
                        "fields": [
                            {"field": "id", "type": "int64", "optional": False},
                            {"field": "name", "type": "string", "optional": True},
                        ],
                    },
                    {"field": "op", "type": "string", "optional": False},
                ],
            },
            "payload": {"after": {"id": 2, "name": "b"}, "op": "c"},
        }
    ).encode()
    batch = decode_batch(
        [record(0, avro_value), record(1, json_value)],
        {},
        writer_schemas=WriterSchemas({3: json.dumps(schema)}),
    )
    assert batch.rejected == []
    assert batch.tables["s.public.t"].select(["id", "name"]).to_pylist() == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
    ]


def test_unsupported_writer_schema_is_an_invalid_envelope() -> None:
    schema = envelope([ID, {"name": "u", "type": ["null", "long", "string"], "default": None}])
    value = encode(4, schema, event({"id": 1, "u": 3}))
    reason, detail = rejected_as(record(0, value), WriterSchemas({4: json.dumps(schema)}))
    assert reason == RejectReason.INVALID_ENVELOPE and "union" in detail


def test_connect_names_types_and_parameters_come_back_from_the_avro_properties() -> None:
    decimal = {
        "type": "bytes",
        "scale": 2,
        "precision": 10,
        "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "connect.name": "org.apache.kafka.connect.data.Decimal",
        "logicalType": "decimal",
    }
    schema = {
        "type": "record",
        "name": "Key",
        "fields": [
            {"name": "a", "type": {"type": "int", "connect.type": "int16"}},
            {"name": "b", "type": ["null", decimal], "default": None},
            {"name": "c", "type": {"type": "map", "values": "long"}},
        ],
        "connect.name": "s.public.t.Key",
    }
    assert to_connect(schema) == {
        "type": "struct",
        "name": "s.public.t.Key",
        "optional": False,
        "fields": [
            {"field": "a", "type": "int16", "optional": False},
            {
                "field": "b",
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "2", "connect.decimal.precision": "10"},
                "optional": True,
            },
            {
                "field": "c",
                "type": "map",
                "keys": {"type": "string", "optional": False},
                "values": {"type": "int64", "optional": False},
                "optional": False,
            },
        ],
    }
