"""Kafka Connect / Debezium field schemas -> codecs: the type mapping, and the decimal codecs.

``codec_for`` maps one Connect field schema (``{"type": ..., "name": ..., "parameters": ...}``) to a codec:
semantic names first (decimals here, temporal types in :mod:`cdcwh.core.temporal`, string-based ones to text),
then the Connect type. Decimal -> decimal128(``connect.decimal.precision`` or 38, scale), built from the
unscaled integers without floats; VariableScaleDecimal -> decimal128(38, 18), exact or rejected.
The full table is in docs/decoding.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Context, Decimal
from typing import Any, Final

import pyarrow as pa

from cdcwh.core.codec import (
    BoolCodec,
    BytesCodec,
    Codec,
    FloatCodec,
    IntCodec,
    StringCodec,
    ValueMismatch,
    decode_base64,
    require_int,
)
from cdcwh.core.nested import FieldCodec, ListCodec, MapCodec, StructCodec
from cdcwh.core.temporal import DateCodec, TimeCodec, TimestampCodec, ZonedTimestampCodec

_WIDE: Final = Context(prec=200)
MAX_SCHEMA_DEPTH: Final = 32


class SchemaError(ValueError):
    """A Connect schema cannot be mapped to Arrow."""


class DecimalCodec(Codec):
    """``org.apache.kafka.connect.data.Decimal``: base64 big-endian two's complement unscaled value."""

    def __init__(self, precision: int, scale: int) -> None:
        self.precision, self.scale, self.limit = precision, scale, 10**precision
        self.arrow_type = pa.decimal128(precision, scale)
        self.label = f"decimal({precision},{scale})"

    def unscaled(self, value: Any) -> int:
        raw = decode_base64(value)
        if not raw:
            raise ValueMismatch("zero-length decimal bytes")
        unscaled = int.from_bytes(raw, "big", signed=True)
        if not -self.limit < unscaled < self.limit:
            raise ValueMismatch(f"overflows precision {self.precision}")
        return unscaled

    def one(self, value: Any) -> Any:
        return Decimal(self.unscaled(value)).scaleb(-self.scale, _WIDE)

    def fast(self, values: list[Any]) -> pa.Array:
        unscaled = self.unscaled
        return unscaled_to_decimal([None if v is None else unscaled(v) for v in values], self.arrow_type)


def unscaled_to_decimal(unscaled: list[int | None], decimal_type: pa.Decimal128Type) -> pa.Array:
    """A decimal128 array from unscaled integers, without building ``Decimal`` objects."""
    try:
        wide = pa.array(unscaled, pa.int64()).cast(pa.decimal128(38, 0))
        return pa.Array.from_buffers(decimal_type, len(wide), wide.buffers(), null_count=wide.null_count)
    except (OverflowError, pa.ArrowException):  # beyond int64: write the 16-byte values directly
        data = b"".join((u or 0).to_bytes(16, "little", signed=True) for u in unscaled)
        validity = pa.array([u is not None for u in unscaled], pa.bool_()).buffers()[1]
        nulls = unscaled.count(None)
        return pa.Array.from_buffers(decimal_type, len(unscaled), [validity, pa.py_buffer(data)], nulls)


class VariableScaleDecimalCodec(Codec):
    """``io.debezium.data.VariableScaleDecimal`` ``{scale, value}`` -> decimal128(38, 18) exactly."""

    arrow_type = pa.decimal128(38, 18)
    label = "VariableScaleDecimal -> decimal(38,18)"

    def one(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueMismatch("not a {scale, value} struct")
        scale = require_int(value.get("scale"))
        raw = decode_base64(value.get("value"))
        if not raw:
            raise ValueMismatch("zero-length decimal bytes")
        unscaled = int.from_bytes(raw, "big", signed=True)
        if scale <= 18:
            unscaled *= 10 ** (18 - scale)
        else:
            unscaled, rest = divmod(unscaled, 10 ** (scale - 18))
            if rest:
                raise ValueMismatch("more than 18 fractional digits")
        if not -(10**38) < unscaled < 10**38:
            raise ValueMismatch("more than 20 integer digits")
        return Decimal(unscaled).scaleb(-18, _WIDE)


def _string(label: str) -> Callable[[Mapping[str, Any], int], Codec]:
    return lambda schema, depth: StringCodec(label)


def _decimal(schema: Mapping[str, Any], depth: int) -> Codec:
    params = schema.get("parameters") or {}
    try:
        scale = int(params["scale"])
        precision = min(int(params.get("connect.decimal.precision", 38)), 38)
    except (KeyError, TypeError, ValueError):
        raise SchemaError(f"Decimal without a usable scale parameter: {params!r}") from None
    if not 0 <= scale <= 38:
        raise SchemaError(f"Decimal scale {scale} is outside 0..38")
    return DecimalCodec(max(precision, scale, 1), scale)


_NAMED: Final[dict[str, tuple[str, Callable[[Mapping[str, Any], int], Codec]]]] = {
    "org.apache.kafka.connect.data.Decimal": ("bytes", _decimal),
    "io.debezium.data.VariableScaleDecimal": ("struct", lambda s, d: VariableScaleDecimalCodec()),
    "io.debezium.time.Date": ("int32", lambda s, d: DateCodec("Date")),
    "org.apache.kafka.connect.data.Date": ("int32", lambda s, d: DateCodec("connect Date")),
    "io.debezium.time.Time": ("int32", lambda s, d: TimeCodec("Time (ms)", us_per=1000)),
    "org.apache.kafka.connect.data.Time": ("int32", lambda s, d: TimeCodec("connect Time (ms)", us_per=1000)),
    "io.debezium.time.MicroTime": ("int64", lambda s, d: TimeCodec("MicroTime")),
    "io.debezium.time.NanoTime": ("int64", lambda s, d: TimeCodec("NanoTime", per_us=1000)),
    "io.debezium.time.Timestamp": ("int64", lambda s, d: TimestampCodec("Timestamp (ms)", us_per=1000)),
    "org.apache.kafka.connect.data.Timestamp": (
        "int64",
        lambda s, d: TimestampCodec("connect Timestamp (ms)", us_per=1000),
    ),
    "io.debezium.time.MicroTimestamp": ("int64", lambda s, d: TimestampCodec("MicroTimestamp")),
    "io.debezium.time.NanoTimestamp": ("int64", lambda s, d: TimestampCodec("NanoTimestamp", per_us=1000)),
    "io.debezium.time.ZonedTimestamp": ("string", lambda s, d: ZonedTimestampCodec()),
    "io.debezium.data.Json": ("string", _string("Json")),
    "io.debezium.data.Uuid": ("string", _string("Uuid")),
    "io.debezium.data.Enum": ("string", _string("Enum")),
    "io.debezium.data.EnumSet": ("string", _string("EnumSet")),
    "io.debezium.data.Xml": ("string", _string("Xml")),
    "io.debezium.time.ZonedTime": ("string", _string("ZonedTime")),
}
"""Semantic names with their own decoding. Any other name decodes by its Connect type."""


def codec_for(schema: Any, depth: int = 0) -> Codec:
    """The codec of one Connect field schema; raises :class:`SchemaError` when it cannot be mapped."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"a field schema must be an object, got {type(schema).__name__}")
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels")
    ctype, name = schema.get("type"), schema.get("name")
    if isinstance(name, str) and name in _NAMED:
        expected, build = _NAMED[name]
        if ctype != expected:
            raise SchemaError(f"{name} must have Connect type {expected}, got {ctype!r}")
        return build(schema, depth)
    if ctype in ("int8", "int16", "int32", "int64"):
        return IntCodec(int(ctype[3:]))
    if ctype in ("float", "float32"):
        return FloatCodec(32)
    if ctype in ("double", "float64"):
        return FloatCodec(64)
    if ctype == "boolean":
        return BoolCodec()
    if ctype == "string":
        return StringCodec(name if isinstance(name, str) else "string")
    if ctype == "bytes":
        return BytesCodec(name if isinstance(name, str) else "bytes")
    if ctype == "array":
        items = schema.get("items")
        return ListCodec(codec_for(items, depth + 1), _optional(items))
    if ctype == "map":
        return MapCodec(codec_for(schema.get("keys"), depth + 1), codec_for(schema.get("values"), depth + 1))
    if ctype == "struct":
        return StructCodec(struct_fields(schema, depth + 1), name if isinstance(name, str) else "struct")
    raise SchemaError(f"unsupported Connect type {ctype!r}")


def struct_fields(schema: Mapping[str, Any], depth: int = 0) -> tuple[FieldCodec, ...]:
    """The field codecs of a Connect struct schema, in schema order."""
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise SchemaError("a struct schema needs a list of fields")
    out: list[FieldCodec] = []
    for item in fields:
        name = item.get("field") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name:
            raise SchemaError(f"struct field without a name: {item!r}"[:200])
        out.append(FieldCodec(name, codec_for(item, depth), _optional(item)))
    if len({f.name for f in out}) != len(out):
        raise SchemaError("struct with duplicate field names")
    return tuple(out)


def _optional(schema: Any) -> bool:
    return not isinstance(schema, Mapping) or schema.get("optional", True) is not False


SEMANTIC_TYPES: Final[dict[str, str]] = {name: ctype for name, (ctype, _) in _NAMED.items()}
"""Semantic names with a dedicated decoding -> the Connect type they must have."""
