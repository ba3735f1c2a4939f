"""Table contracts: the declared types and validation rules of a source table (``schemas/contracts/*.toml``).

A contract does two jobs. For schemaless events (JSON converter with ``schemas.enable=false``) it supplies the
column types, as the Debezium PostgreSQL connector would encode them on the wire (``type``, optionally
overridden by ``semantic``). For every event it adds rules checked on the after image of r/c/u rows:
``nullable = false``, ``accepted_values`` and inclusive ``min``/``max``. ``key`` names the primary key: a
record of a keyed table without a key, or with a null key field, is rejected as ``missing_key``.
The file loader lives outside ``core`` (``cdcwh.contracts``); this module only parses mappings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cdcwh.core.codec import Codec
from cdcwh.core.nested import FieldCodec
from cdcwh.core.record import show
from cdcwh.core.semantic import SEMANTIC_TYPES, SchemaError, codec_for

_DECIMAL: Final = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_WIRE: Final[dict[str, dict[str, Any]]] = {
    "boolean": {"type": "boolean"},
    "int16": {"type": "int16"},
    "int32": {"type": "int32"},
    "int64": {"type": "int64"},
    "float32": {"type": "float"},
    "float64": {"type": "double"},
    "string": {"type": "string"},
    "binary": {"type": "bytes"},
    "date": {"type": "int32", "name": "io.debezium.time.Date"},
    "time": {"type": "int64", "name": "io.debezium.time.MicroTime"},
    "timestamp": {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
    "timestamptz": {"type": "string", "name": "io.debezium.time.ZonedTimestamp"},
    "json": {"type": "string", "name": "io.debezium.data.Json"},
    "uuid": {"type": "string", "name": "io.debezium.data.Uuid"},
}
"""Contract type -> the Connect schema the PostgreSQL connector emits for it (default settings)."""


def wire_schema(type_name: str, semantic: str | None = None) -> dict[str, Any]:
    """The Connect field schema a contract type arrives as; ``semantic`` overrides the semantic name."""
    match = _DECIMAL.fullmatch(type_name.strip())
    if match:
        precision, scale = match.groups()
        params = {"scale": scale, "connect.decimal.precision": precision}
        schema: dict[str, Any] = {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal"}
        schema["parameters"] = params
    elif type_name in _WIRE:
        schema = dict(_WIRE[type_name])
    else:
        raise ValueError(f"unknown contract type {type_name!r}; use one of {sorted(_WIRE)} or decimal(p,s)")
    if semantic is not None:
        if semantic not in SEMANTIC_TYPES:
            raise ValueError(f"unknown semantic type {semantic!r}; known: {sorted(SEMANTIC_TYPES)}")
        schema["type"], schema["name"] = SEMANTIC_TYPES[semantic], semantic
    schema["optional"] = True
    return schema


class ColumnContract(BaseModel):
    """One column: its type and rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    """boolean, int16, int32, int64, float32, float64, decimal(p,s), string, binary, date, time, timestamp,
    timestamptz, json or uuid."""
    semantic: str | None = None
    """Wire encoding override for schemaless events, e.g. ``io.debezium.time.Timestamp`` (epoch ms)."""
    nullable: bool = True
    """``false``: a null in an r/c/u after image is a contract violation (TOASTed values are not null)."""
    accepted_values: tuple[str | int, ...] | None = None
    """The only values allowed (nulls are governed by ``nullable``)."""
    min: Decimal | None = None
    """Inclusive lower bound (numeric columns)."""
    max: Decimal | None = None
    """Inclusive upper bound (numeric columns)."""
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ColumnContract:
        arrow_type = self.arrow_type  # raises on an unknown type or a mismatched semantic override
        numeric = pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
        if (self.min is not None or self.max is not None) and not (
            numeric or pa.types.is_decimal(arrow_type)
        ):
            raise ValueError(f"min/max need a numeric type, not {self.type}")
        if self.accepted_values is not None:
            try:
                pa.array(list(self.accepted_values), type=arrow_type)
            except (pa.ArrowException, TypeError, ValueError):
                raise ValueError(f"accepted_values do not all fit {self.type}") from None
        return self

    @property
    def codec(self) -> Codec:
        """The codec decoding this column's schemaless wire values."""
        try:
            codec = codec_for(wire_schema(self.type, self.semantic))
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        if self.semantic is not None and codec.arrow_type != codec_for(wire_schema(self.type)).arrow_type:
            raise ValueError(f"semantic {self.semantic} does not decode to type {self.type}")
        return codec

    @property
    def arrow_type(self) -> pa.DataType:
        return self.codec.arrow_type


class TableContract(BaseModel):
    """The contract of one topic's table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    """The Debezium topic, ``<prefix>.<schema>.<table>``."""
    key: tuple[str, ...] = ()
    """Primary-key columns; non-empty makes the table keyed."""
    columns: dict[str, ColumnContract] = Field(default_factory=dict)
    """Columns in table order."""
    description: str | None = None

    @model_validator(mode="after")
    def _check_key(self) -> TableContract:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key columns {missing} are not declared in columns")
        return self

    def field_codecs(self) -> dict[str, FieldCodec]:
        """Codecs for schemaless values, by column (optional: nulls are a contract matter, not a type one)."""
        return {name: FieldCodec(name, column.codec) for name, column in self.columns.items()}


def parse_contract(data: Mapping[str, Any], *, topic: str | None = None) -> TableContract:
    """Validate a contract mapping (e.g. parsed TOML); ``topic`` is the default when the mapping has none."""
    fields = dict(data)
    if topic is not None:
        fields.setdefault("topic", topic)
    return TableContract.model_validate(fields)


def check_contract(
    contract: TableContract,
    columns: Mapping[str, pa.Array],
    active: pa.Array,
    toasted: Mapping[str, list[int]],
) -> dict[int, str]:
    """Contract violations by row index: the first failing rule of each failing row.

    ``columns`` are the decoded after-image columns; ``active`` is true for rows with an after image (r/c/u);
    ``toasted`` lists, per column, the rows whose value was the TOAST placeholder (exempt from the rules).
    """
    violations: dict[int, str] = {}
    length = len(active)
    for name, rule in contract.columns.items():
        array = columns.get(name)
        if array is None:
            array = pa.nulls(length, rule.arrow_type)
        exempt = set(toasted.get(name, ()))
        if not rule.nullable:
            for i in _where(pc.and_(pc.is_null(array), active)):
                if i not in exempt:
                    violations.setdefault(i, f"column {name!r} is null but the contract says not null")
        for i, message in _rule_failures(name, rule, array, active):
            violations.setdefault(i, message)
    return violations


def _rule_failures(
    name: str, rule: ColumnContract, array: pa.Array, active: pa.Array
) -> list[tuple[int, str]]:
    present = pc.and_(pc.is_valid(array), active)
    out: list[tuple[int, str]] = []
    if rule.accepted_values is not None:
        try:
            allowed = pa.array(list(rule.accepted_values)).cast(array.type)
            bad = pc.invert(pc.is_in(array, value_set=allowed))
        except (pa.ArrowException, TypeError, ValueError):
            bad = pa.repeat(True, len(array))
        for i in _where(pc.and_(bad, present)):
            values = ", ".join(map(str, rule.accepted_values))
            out.append((i, f"column {name!r} value {show(array[i].as_py())} is not one of: {values}"))
    for bound, compare, word in ((rule.min, pc.less, "below min"), (rule.max, pc.greater, "above max")):
        if bound is None:
            continue
        try:
            bad = compare(array, pa.scalar(bound))
        except (pa.ArrowException, TypeError, ValueError):
            bad = pa.repeat(True, len(array))
        for i in _where(pc.and_(bad, present)):
            out.append((i, f"column {name!r} value {show(array[i].as_py())} is {word} {bound}"))
    return out


def _where(mask: pa.Array) -> list[int]:
    return [int(i) for i in pc.indices_nonzero(mask.fill_null(False)).to_pylist()]
