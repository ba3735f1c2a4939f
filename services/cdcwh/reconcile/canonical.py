"""Values compared by meaning: one canonical text per value, produced the same way from a PostgreSQL source
row (psycopg) and a silver row (DuckDB), and the SQL that produces the same text inside each engine.

Silver holds what Debezium sent, decoded (docs/decoding.md): ``numeric(10,2)`` is ``DECIMAL(10,2)``,
``timestamptz`` a UTC ``TIMESTAMPTZ``, ``timestamp`` a naive ``TIMESTAMP``, ``uuid`` and ``json`` text,
``bytea`` a ``BLOB``, ``infinity`` the largest value (``9999-12-31 23:59:59.999999``). The canonical text
depends on the *source* column's type (``Column.kind``), applied to both sides' values:

- numbers exactly: integers as digits, ``numeric`` normalised (``1.50`` and ``1.5`` are the same number),
  ``real`` rounded to single precision first (DuckDB returns the float32, psycopg the shortest text);
- ``timestamptz`` as a UTC instant, ``timestamp`` as wall-clock time, both to the microsecond; ``date``
  ISO; PostgreSQL ``infinity`` / ``-infinity`` as the sentinels cdcwh stores for them;
- ``json`` / ``jsonb`` parsed and dumped with sorted keys; ``uuid`` lower case; ``bytea`` hex; arrays
  element by element; text as it is.

The range digests (``sql_digest``) hash a text built in SQL on both sides for the types whose text the two
engines can write identically (integers, boolean, text, fixed-scale numeric, date, timestamp, timestamptz,
uuid). A table with any other column type is compared row by row in every range instead: correct, slower.
A digest that differs only because the engines wrote a value differently (an ``infinity``) is harmless too:
the range is then compared row by row, in Python, with ``canonical``.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from cdcwh.core.identifiers import quote

TEXT_TYPES = {"text", "varchar", "name", "citext", "xml"}
INT_TYPES = {"int2", "int4", "int8"}
SIMPLE_KINDS = {
    "bool": "bool",
    "numeric": "numeric",
    "float4": "float4",
    "float8": "float8",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "timetz": "timetz",
    "interval": "interval",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "json",
    "bytea": "bytea",
    "bpchar": "bpchar",
}

# the PostgreSQL catalog query that gives ``SourceColumn`` (domains resolved to their base type)
COLUMNS_SQL = """
SELECT a.attname, t.typname, t.typtype, t.typcategory,
       CASE WHEN t0.typtype = 'd' THEN t0.typtypmod ELSE a.atttypmod END, et.typname
FROM pg_attribute a
JOIN pg_type t0 ON t0.oid = a.atttypid
JOIN pg_type t ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

TIMESTAMP_PG = "YYYY-MM-DD HH24:MI:SS.US"
TIMESTAMP_DUCK = "%Y-%m-%d %H:%M:%S.%f"
# what cdcwh stores for PostgreSQL's infinity and -infinity (docs/decoding.md)
INFINITY = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC).replace(tzinfo=None)
MINUS_INFINITY = datetime(1, 1, 1, tzinfo=UTC).replace(tzinfo=None)


def kind_of(typname: str, typtype: str, typcategory: str, element: str | None) -> str:
    """The comparison kind of a PostgreSQL type (``array:<kind>`` for arrays, ``other`` when unknown)."""
    if typcategory == "A" and element is not None:
        return "array:" + kind_of(element.lstrip("_"), "b", "", None)
    if typtype == "e" or typname in TEXT_TYPES:
        return "text"
    if typname in INT_TYPES:
        return "int"
    return SIMPLE_KINDS.get(typname, "other")


@dataclass(frozen=True, slots=True)
class SourceColumn:
    name: str
    kind: str
    typname: str
    typmod: int = -1

    @property
    def numeric_scale(self) -> int | None:
        """The declared scale of a ``numeric(p,s)``; None when unconstrained."""
        if self.kind != "numeric" or self.typmod < 4:
            return None
        return (self.typmod - 4) & 0xFFFF


# ---- canonical text in Python ------------------------------------------------------------------------------


def canonical(value: Any, kind: str) -> str | None:
    """The canonical text of one value of a column of ``kind``; None for NULL."""
    if value is None:
        return None
    if kind.startswith("array:"):
        element = kind.removeprefix("array:")
        if isinstance(value, str):  # a silver column kept as text
            text: str = value
            try:
                value = json.loads(text)
            except ValueError:
                return text
        if isinstance(value, list | tuple):
            return json.dumps([canonical(item, element) for item in value], ensure_ascii=False)
        return str(value)
    if kind == "json":
        parsed = value
        if isinstance(value, str | bytes):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value if isinstance(value, str) else value.hex()
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, float):
        return _float(value, single=kind == "float4")
    if isinstance(value, datetime):
        return _datetime(value, kind)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return _time(value)
    if isinstance(value, timedelta):
        return str(value // timedelta(microseconds=1))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        if kind == "uuid":
            return value.lower()
        return value
    return str(value)


def _decimal(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def _float(value: float, *, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if single:
        value = struct.unpack("f", struct.pack("f", value))[0]
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _datetime(value: datetime, kind: str) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
        suffix = "Z"
    else:
        suffix = "Z" if kind == "timestamptz" else ""
    return value.isoformat(sep=" ", timespec="microseconds") + suffix


def _time(value: time) -> str:
    if value.tzinfo is not None:
        offset = value.utcoffset() or timedelta()
        moment = datetime.combine(date(2000, 1, 1), value.replace(tzinfo=None)) - offset
        return moment.time().isoformat(timespec="microseconds") + "Z"
    return value.isoformat(timespec="microseconds")


# ---- the same text in SQL, for the range digests -----------------------------------------------------------

SQL_DIGEST_KINDS = {"int", "bool", "text", "numeric", "date", "timestamp", "timestamptz", "uuid"}
DUCK_TYPES = {
    "int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"),
    "bool": ("BOOLEAN",),
    "text": ("VARCHAR",),
    "uuid": ("VARCHAR", "UUID"),
    "date": ("DATE",),
    "timestamp": ("TIMESTAMP",),
    "timestamptz": ("TIMESTAMP WITH TIME ZONE",),
}


def digest_expressions(column: SourceColumn, silver_type: str | None) -> tuple[str, str] | None:
    """(PostgreSQL expression, DuckDB expression) writing the column's value as the same text in both
    engines, or None when they cannot (the table is then compared row by row). A column silver lacks is
    NULL there (a column added to the source that no change has carried yet)."""
    if column.kind not in SQL_DIGEST_KINDS:
        return None
    name = quote(column.name)
    if column.kind == "numeric":
        scale = column.numeric_scale
        if scale is None or (silver_type is not None and not _decimal_with_scale(silver_type, scale)):
            return None
    elif silver_type is not None and silver_type not in DUCK_TYPES[column.kind]:
        return None
    if column.kind == "timestamp":
        pg = f"to_char({name}, '{TIMESTAMP_PG}')"
        duck = f"strftime({name}, '{TIMESTAMP_DUCK}')"
    elif column.kind == "timestamptz":
        pg = f"to_char({name} AT TIME ZONE 'UTC', '{TIMESTAMP_PG}')"
        # the warehouse connection runs with TimeZone = UTC (open_warehouse)
        duck = f"strftime({name}, '{TIMESTAMP_DUCK}')"
    else:
        pg = f"({name})::text"
        duck = f"CAST({name} AS VARCHAR)"
    if silver_type is None:
        duck = "CAST(NULL AS VARCHAR)"
    return pg, duck


def _decimal_with_scale(silver_type: str, scale: int) -> bool:
    if not silver_type.startswith("DECIMAL(") or not silver_type.endswith(")"):
        return False
    _, _, declared = silver_type[len("DECIMAL(") : -1].partition(",")
    return declared.strip() == str(scale)


def row_hash_pg(expressions: list[str]) -> str:
    """A 60-bit integer from the md5 of the row's canonical text (length-prefixed values, ``~`` for NULL)."""
    text = " || '|' || ".join(f"coalesce(octet_length({e})::text || ':' || {e}, '~')" for e in expressions)
    return f"('x' || substr(md5({text}), 1, 15))::bit(60)::bigint"


def row_hash_duck(expressions: list[str]) -> str:
    values = (f"coalesce(CAST(strlen({e}) AS VARCHAR) || ':' || {e}, '~')" for e in expressions)
    text = " || '|' || ".join(values)
    return f"('0x' || substr(md5({text}), 1, 15))::BIGINT"
