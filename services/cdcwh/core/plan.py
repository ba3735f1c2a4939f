"""Row plans: which fields a row has and how each is decoded, derived once per schema and cached.

The ``schema`` block of a Debezium JSON event is identical for every event of a table, so its plan is built
once and looked up by the schema's raw bytes (:class:`PlanCache`). Schemaless events get their plan from the
table contract, with any column the contract does not know marked :data:`INFER`: its type is inferred per
batch from the values (:func:`infer_codec`, conservative: see docs/decoding.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from cdcwh.core.codec import BoolCodec, Codec, FloatCodec, IntCodec, JsonTextCodec, StringCodec
from cdcwh.core.nested import FieldCodec
from cdcwh.core.semantic import MYSQL_SOURCES, SchemaError, struct_fields

METADATA_COLUMNS: Final = (
    "__op",
    "__key",
    "__before",
    "__toasted",
    "__source_ts",
    "__source_ts_ns",
    "__lsn",
    "__tx_id",
    "__snapshot",
    "__db",
    "__schema",
    "__table",
    "__topic",
    "__partition",
    "__offset",
    "__kafka_ts",
)
"""The bronze metadata columns that follow the data columns, in order."""


class InferCodec(Codec):
    """Stands for a schemaless column without a contract type; resolved by :func:`infer_codec`."""

    label = "inferred"


INFER: Final = InferCodec()


@dataclass(frozen=True, eq=False, slots=True)
class RowPlan:
    """The fields of a row (value or key) in order; ``error`` when the schema cannot be decoded.

    Plans compare by identity: rows of one plan share one set of column builders.
    """

    fields: tuple[FieldCodec, ...] = ()
    error: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


EMPTY_PLAN: Final = RowPlan()


def value_plan(schema: Any) -> RowPlan:
    """The row plan of a Debezium envelope schema: the fields of its ``after`` (or ``before``) struct.

    Envelopes without a row struct (logical decoding messages, truncates) have no data fields. The
    ``source`` struct's schema name tells a MySQL/MariaDB event (``io.debezium.connector.mysql.Source``),
    whose ``TIME`` columns are durations (:func:`cdcwh.core.semantic.codec_for`).
    """
    try:
        if not isinstance(schema, Mapping) or schema.get("type") != "struct":
            raise SchemaError("the envelope schema is not a struct")
        parts = schema.get("fields")
        if not isinstance(parts, list):
            raise SchemaError("the envelope schema has no fields")
        by_name = {p.get("field"): p for p in parts if isinstance(p, Mapping)}
        row = by_name.get("after") or by_name.get("before")
        if row is None:
            return EMPTY_PLAN
        source = by_name.get("source")
        mysql = isinstance(source, Mapping) and source.get("name") in MYSQL_SOURCES
        fields = struct_fields(row, mysql=mysql)
        clash = [f.name for f in fields if f.name in METADATA_COLUMNS]
        if clash:
            raise SchemaError(f"columns {clash} clash with bronze metadata columns")
        return RowPlan(fields)
    except SchemaError as exc:
        return RowPlan(error=f"value schema: {exc}")


def key_plan(schema: Any) -> RowPlan:
    """The row plan of a key schema (a struct of the primary-key columns)."""
    try:
        if not isinstance(schema, Mapping) or schema.get("type") != "struct":
            raise SchemaError("the key schema is not a struct")
        return RowPlan(struct_fields(schema))
    except SchemaError as exc:
        return RowPlan(error=f"key schema: {exc}")


class PlanCache:
    """Plans by the raw bytes of their schema, bounded (cleared when full: schemas are few and stable)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._plans: dict[bytes, RowPlan] = {}

    def get(self, raw_schema: bytes) -> RowPlan | None:
        return self._plans.get(raw_schema)

    def put(self, raw_schema: bytes, plan: RowPlan) -> None:
        if len(self._plans) >= self.max_entries:
            self._plans.clear()
        self._plans[raw_schema] = plan

    def clear(self) -> None:
        self._plans.clear()


def schemaless_plan(names: Iterable[str], known: Mapping[str, FieldCodec]) -> RowPlan:
    """A plan for schemaless rows: the ``known`` (contract) columns first, then the others, inferred."""
    fields = list(known.values())
    fields.extend(FieldCodec(name, INFER) for name in names if name not in known)
    clash = [f.name for f in fields if f.name in METADATA_COLUMNS]
    if clash:
        return RowPlan(error=f"columns {clash} clash with bronze metadata columns")
    return RowPlan(tuple(fields))


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def infer_codec(columns: Iterable[list[Any]]) -> Codec | None:
    """The conservative type of a schemaless column without a contract, from all its values in the batch.

    Only what JSON itself says: all booleans -> bool; all integers (in int64) -> int64; numbers with a
    fraction -> float64; all strings -> string; anything else (objects, arrays, mixed kinds) -> the JSON text.
    Strings are never reinterpreted (no base64 decimals, no ISO timestamps). ``None`` when every value is
    null: the column is left out of the batch (the writer's union-by-name adds it back as null).
    """
    kinds: set[type] = set()
    low, high = 0, 0
    for values in columns:
        for value in values:
            if value is None:
                continue
            kind = type(value)
            kinds.add(kind)
            if kind is int:
                low, high = min(low, value), max(high, value)
    if not kinds:
        return None
    if kinds == {bool}:
        return BoolCodec()
    if kinds == {int}:
        return IntCodec(64) if _INT64_MIN <= low and high <= _INT64_MAX else JsonTextCodec()
    if kinds <= {int, float}:
        return FloatCodec(64)
    if kinds == {str}:
        return StringCodec("string (inferred)")
    return JsonTextCodec()


def struct_type(fields: Iterable[FieldCodec]) -> pa.StructType:
    """The Arrow struct of a row's fields."""
    return pa.struct([pa.field(f.name, f.codec.arrow_type) for f in fields])
