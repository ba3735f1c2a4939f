"""Encode a ``SourceChange`` exactly as Debezium's PostgreSQL connector + Kafka Connect's JsonConverter do.

The format follows Debezium 2.7.3.Final (the envelope is unchanged in 3.0/3.1), checked against a captured
2.7.3.Final record and the connector sources (``PostgresSourceInfoStructMaker``, ``PostgresValueConverter``,
``ZonedTimestamp``) and Kafka's ``JsonConverter``:

* envelope schema ``<prefix>.<schema>.<table>.Envelope`` version 2, fields ``before, after, source,
  transaction, op, ts_ms, ts_us, ts_ns``; payload in the same order; ``transaction`` null (transaction
  metadata off, the default);
* ``source`` = ``io.debezium.connector.postgresql.Source``: version, connector, name, ts_ms, snapshot
  (``io.debezium.data.Enum`` "true,last,false,incremental", default "false"), db, sequence
  (``["<last commit lsn>","<lsn>"]`` as a JSON string), ts_us, ts_ns, schema, table, txId, lsn, xmin;
* JsonConverter writes a field schema as ``type, optional, name, version, parameters, default, field``;
* numeric(10,2) -> bytes ``org.apache.kafka.connect.data.Decimal`` (base64 of BigInteger.toByteArray of the
  unscaled value); timestamptz -> ``io.debezium.time.ZonedTimestamp`` (UTC, ``Z``, exactly the column's 6
  fractional digits); timestamp -> int64 ``io.debezium.time.MicroTimestamp``; date -> int32
  ``io.debezium.time.Date`` (days since the epoch);
* a delete is followed by a tombstone: same key, null value.

Primary keys are modelled without a column default (no ``serial``); a serial column would add
``"default":0`` to its field schema.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from cdcwh.generate.change import (
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    SHOP_TABLES,
    ColumnKind,
    SourceChange,
    Table,
)

DEBEZIUM_VERSION = "2.7.3.Final"
CONNECTOR = "postgresql"
DEFAULT_DATABASE = "shop"

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = _EPOCH_UTC.replace(tzinfo=None)
_EPOCH_DATE = date(1970, 1, 1)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One Kafka record: topic, key bytes and value bytes (None for a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None


# ---- value conversions ------------------------------------------------------------------------------------


def encode_decimal(value: Decimal, scale: int = DECIMAL_SCALE) -> str:
    """Base64 of the big-endian two's-complement unscaled value, minimal (Java BigInteger.toByteArray)."""
    unscaled = value.scaleb(scale)
    if unscaled != unscaled.to_integral_value():
        raise ValueError(f"{value} has more than {scale} decimal places")
    number = int(unscaled)
    # BigInteger.bitLength() excludes the sign bit; toByteArray() is bitLength/8 + 1 bytes long
    length = (number if number >= 0 else ~number).bit_length() // 8 + 1
    return base64.b64encode(number.to_bytes(length, "big", signed=True)).decode("ascii")


def encode_zoned_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` and 6 fractional digits, as Debezium formats timestamptz(6)."""
    if value.tzinfo is None:
        raise ValueError("a timestamptz value must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_micro_timestamp(value: datetime) -> int:
    """Microseconds since the epoch of a naive (timestamp without time zone) value."""
    if value.tzinfo is not None:
        raise ValueError("a timestamp without time zone value must be naive")
    return (value - _EPOCH_NAIVE) // _MICRO


def encode_date(value: date) -> int:
    return (value - _EPOCH_DATE).days


def _encode_value(kind: ColumnKind, value: Any, toasted: bool) -> Any:
    if value is None or toasted:
        return value
    if kind == "decimal":
        return encode_decimal(value)
    if kind == "timestamptz":
        return encode_zoned_timestamp(value)
    if kind == "timestamp":
        return encode_micro_timestamp(value)
    if kind == "date":
        return encode_date(value)
    return value


def _encode_row(table: Table, row: dict[str, Any] | None, toasted: frozenset[str]) -> dict[str, Any] | None:
    if row is None:
        return None
    return {c.name: _encode_value(c.kind, row.get(c.name), c.name in toasted) for c in table.columns}


# ---- schemas (JsonConverter key order: type, fields, optional, name, version, parameters, default, field)

_SEMANTIC: dict[ColumnKind, dict[str, Any]] = {
    "int32": {"type": "int32"},
    "int64": {"type": "int64"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "decimal": {
        "type": "bytes",
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": str(DECIMAL_SCALE), "connect.decimal.precision": str(DECIMAL_PRECISION)},
    },
    "timestamptz": {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1},
    "timestamp": {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "version": 1},
    "date": {"type": "int32", "name": "io.debezium.time.Date", "version": 1},
}


def _field(kind: ColumnKind, name: str, optional: bool) -> dict[str, Any]:
    semantic = dict(_SEMANTIC[kind])
    return {"type": semantic.pop("type"), "optional": optional, **semantic, "field": name}


def _plain(kind: str, name: str, optional: bool) -> dict[str, Any]:
    return {"type": kind, "optional": optional, "field": name}


def key_schema(table: Table, prefix: str, schema: str) -> dict[str, Any]:
    fields = [_field(c.kind, c.name, False) for c in table.columns if c.name in table.primary_key]
    return {
        "type": "struct",
        "fields": fields,
        "optional": False,
        "name": f"{prefix}.{schema}.{table.name}.Key",
    }


def value_schema(table: Table, prefix: str, schema: str) -> dict[str, Any]:
    row_fields = [_field(c.kind, c.name, c.name not in table.primary_key) for c in table.columns]
    row_name = f"{prefix}.{schema}.{table.name}.Value"
    source = [
        _plain("string", "version", False),
        _plain("string", "connector", False),
        _plain("string", "name", False),
        _plain("int64", "ts_ms", False),
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {"allowed": "true,last,false,incremental"},
            "default": "false",
            "field": "snapshot",
        },
        _plain("string", "db", False),
        _plain("string", "sequence", True),
        _plain("int64", "ts_us", True),
        _plain("int64", "ts_ns", True),
        _plain("string", "schema", False),
        _plain("string", "table", False),
        _plain("int64", "txId", True),
        _plain("int64", "lsn", True),
        _plain("int64", "xmin", True),
    ]
    transaction = [
        _plain("string", "id", False),
        _plain("int64", "total_order", False),
        _plain("int64", "data_collection_order", False),
    ]
    fields = [
        {"type": "struct", "fields": row_fields, "optional": True, "name": row_name, "field": "before"},
        {"type": "struct", "fields": row_fields, "optional": True, "name": row_name, "field": "after"},
        {
            "type": "struct",
            "fields": source,
            "optional": False,
            "name": "io.debezium.connector.postgresql.Source",
            "field": "source",
        },
        {
            "type": "struct",
            "fields": transaction,
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        },
        _plain("string", "op", False),
        _plain("int64", "ts_ms", True),
        _plain("int64", "ts_us", True),
        _plain("int64", "ts_ns", True),
    ]
    return {
        "type": "struct",
        "fields": fields,
        "optional": False,
        "name": f"{prefix}.{schema}.{table.name}.Envelope",
        "version": 2,
    }


@functools.lru_cache(maxsize=64)
def _schema_prefixes(table_name: str, prefix: str, schema: str) -> tuple[bytes, bytes]:
    """The serialized ``{"schema":...,"payload":`` openings of key and value (built once per table)."""
    table = SHOP_TABLES[table_name]
    key = b'{"schema":' + orjson.dumps(key_schema(table, prefix, schema)) + b',"payload":'
    value = b'{"schema":' + orjson.dumps(value_schema(table, prefix, schema)) + b',"payload":'
    return key, value


# ---- records ----------------------------------------------------------------------------------------------


def _processing_lag_ms(change: SourceChange) -> int:
    """A deterministic connector lag of 5-250 ms between commit and processing (simulated time only)."""
    return 5 + (change.lsn // 8) % 246


def value_payload(
    change: SourceChange, *, prefix: str = "shop", schema: str = "public", database: str = DEFAULT_DATABASE,
    ts_ms: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The envelope payload of ``change`` (what ``schemas.enable=false`` puts on the wire)."""
    table = SHOP_TABLES[change.table]
    source_ms = change.ts_ms if ts_ms is None else ts_ms
    processed_ms = source_ms + (_processing_lag_ms(change) if ts_ms is None else 0)
    last_commit = None if change.last_commit_lsn is None else str(change.last_commit_lsn)
    source = {
        "version": DEBEZIUM_VERSION,
        "connector": CONNECTOR,
        "name": prefix,
        "ts_ms": source_ms,
        "snapshot": change.snapshot,
        "db": database,
        "sequence": orjson.dumps([last_commit, str(change.lsn)]).decode(),
        "ts_us": source_ms * 1000,
        "ts_ns": source_ms * 1_000_000,
        "schema": schema,
        "table": change.table,
        "txId": change.tx_id,
        "lsn": change.lsn,
        "xmin": None,
    }
    return {
        "before": _encode_row(table, change.before, frozenset()),
        "after": _encode_row(table, change.after, change.toasted),
        "source": source,
        "transaction": None,
        "op": change.op,
        "ts_ms": processed_ms,
        "ts_us": processed_ms * 1000,
        "ts_ns": processed_ms * 1_000_000,
    }


def encode(
    change: SourceChange,
    *,
    schemaless: bool = False,
    prefix: str = "shop",
    schema: str = "public",
    ts_ms: int | None = None,
    database: str = DEFAULT_DATABASE,
) -> list[KafkaRecord]:
    """The Kafka record(s) for one change: the change event, plus a tombstone after a delete.

    ``ts_ms`` overrides the source commit time (and the processing time), e.g. with the wall clock when
    producing live so that end-to-end freshness can be measured. ``schemaless`` drops the JsonConverter
    ``schema``/``payload`` wrapper (``schemas.enable=false``).
    """
    table = SHOP_TABLES[change.table]
    topic = f"{prefix}.{schema}.{change.table}"
    key_payload = orjson.dumps({name: change.key[name] for name in table.primary_key})
    payload = orjson.dumps(
        value_payload(change, prefix=prefix, schema=schema, database=database, ts_ms=ts_ms)
    )
    if schemaless:
        key, value = key_payload, payload
    else:
        key_open, value_open = _schema_prefixes(change.table, prefix, schema)
        key, value = key_open + key_payload + b"}", value_open + payload + b"}"
    records = [KafkaRecord(topic, key, value)]
    if change.op == "d":
        records.append(KafkaRecord(topic, key, None))
    return records
