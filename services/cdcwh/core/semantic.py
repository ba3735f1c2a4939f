"""Kafka Connect / Debezium field schemas -> codecs: the type mapping, and the decimal codecs.

``codec_for`` maps one Connect field schema (``{"type": ..., "name": ..., "parameters": ...}``) to a codec:
semantic names first (decimals here, temporal types in :mod:`cdcwh.core.temporal`, string-based ones to text),
then the Connect type. Decimal -> decimal128(``connect.decimal.precision`` or 38, scale), built from the
unscaled integers without floats; VariableScaleDecimal (PostgreSQL ``numeric`` without a precision) -> its
exact decimal text, a string (a bronze column made as decimal(38, 18) by earlier releases stays so: see
:func:`legacy_decimal_columns`). With ``mysql=True`` (the envelope's ``source`` is the MySQL or MariaDB
connector's) ``MicroTime``/``NanoTime`` are MySQL ``TIME`` values, signed durations that may exceed 24 hours:
int64 microseconds. The full table is in docs/decoding.md.
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
from cdcwh.core.temporal import DateCodec, DurationCodec, TimeCodec, TimestampCodec, ZonedTimestampCodec

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


class VariableScaleDecimalCodec(StringCodec):
    """``io.debezium.data.VariableScaleDecimal`` ``{scale, value}`` -> its exact decimal text, a string.

    PostgreSQL's unconstrained ``numeric`` holds up to 131072 integer and 16383 fractional digits, which no
    fixed decimal128 type holds; the text (``"1234.5678"``, ``"-0.00012345"``, ``"1000"``: plain notation,
    exactly ``scale`` fractional digits) holds every value and casts to any DuckDB/PostgreSQL decimal.
    """

    def __init__(self) -> None:
        super().__init__("VariableScaleDecimal -> decimal text", toastable=False)

    def one(self, value: Any) -> Any:
        unscaled, scale = variable_scale_unscaled(value)
        return decimal_text(unscaled, scale)

    def fast(self, values: list[Any]) -> pa.Array:
        return Codec.fast(self, values)


class LegacyVariableScaleDecimalCodec(Codec):
    """VariableScaleDecimal -> decimal128(38, 18) exactly, or rejected: how releases before the decimal text
    decoded it. Used only for a column that its bronze table already holds as decimal(38, 18)."""

    arrow_type = pa.decimal128(38, 18)
    label = "VariableScaleDecimal -> decimal(38,18) (the bronze column's type)"

    def one(self, value: Any) -> Any:
        unscaled, scale = variable_scale_unscaled(value)
        if scale <= 18:
            unscaled *= 10 ** (18 - scale)
        else:
            unscaled, rest = divmod(unscaled, 10 ** (scale - 18))
            if rest:
                raise ValueMismatch("more than 18 fractional digits")
        if not -(10**38) < unscaled < 10**38:
            raise ValueMismatch("more than 20 integer digits")
        return Decimal(unscaled).scaleb(-18, _WIDE)


MAX_VARIABLE_SCALE: Final = 16_383 + 1_000
"""Bound on a VariableScaleDecimal's ``|scale|`` (PostgreSQL's display scale is at most 16383)."""


def variable_scale_unscaled(value: Any) -> tuple[int, int]:
    """``(unscaled, scale)`` of a VariableScaleDecimal ``{scale, value}`` struct value."""
    if not isinstance(value, dict):
        raise ValueMismatch("not a {scale, value} struct")
    scale = require_int(value.get("scale"))
    if not -MAX_VARIABLE_SCALE <= scale <= MAX_VARIABLE_SCALE:
        raise ValueMismatch(f"scale {scale} out of range")
    raw = decode_base64(value.get("value"))
    if not raw:
        raise ValueMismatch("zero-length decimal bytes")
    return int.from_bytes(raw, "big", signed=True), scale


def decimal_text(unscaled: int, scale: int) -> str:
    """The exact plain-notation text of ``unscaled * 10**-scale``, with ``scale`` fractional digits when
    positive (``decimal_text(-12345, 8) == "-0.00012345"``, ``decimal_text(5, -3) == "5000"``). Never a
    float; ``Decimal(int)`` is exact and not bound by ``sys.get_int_max_str_digits``."""
    digits = str(Decimal(abs(unscaled)))
    sign = "-" if unscaled < 0 else ""
    if scale <= 0:
        return sign + digits + "0" * -scale if unscaled else "0"
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def legacy_decimal_columns(existing: pa.Schema | None) -> frozenset[tuple[bool, str]]:
    """``(is_key, column)`` of a bronze table's top-level columns (and ``__key`` fields) that earlier releases
    made decimal(38, 18) from a VariableScaleDecimal: they keep that type (an Iceberg column cannot turn into
    a string), so a VariableScaleDecimal decodes into them as before. Any other decimal(38, 18) column is
    unaffected: only VariableScaleDecimal fields look this up."""
    if existing is None:
        return frozenset()
    legacy = pa.decimal128(38, 18)
    out = {(False, f.name) for f in existing if f.type == legacy}
    index = existing.get_field_index("__key")
    if index >= 0 and pa.types.is_struct(existing.field(index).type):
        out |= {(True, f.name) for f in existing.field(index).type if f.type == legacy}
    return frozenset(out)


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

_MYSQL_NAMED: Final[dict[str, tuple[str, Callable[[Mapping[str, Any], int], Codec]]]] = {
    "io.debezium.time.MicroTime": ("int64", lambda s, d: DurationCodec("MicroTime (MySQL TIME, a duration)")),
    "io.debezium.time.NanoTime": (
        "int64",
        lambda s, d: DurationCodec("NanoTime (MySQL TIME, a duration)", per_us=1000),
    ),
}
"""What differs for the MySQL and MariaDB connectors: ``TIME`` is a signed duration, up to 838:59:59."""
MYSQL_SOURCES: Final = frozenset(
    {"io.debezium.connector.mysql.Source", "io.debezium.connector.mariadb.Source"}
)
"""Names of the envelope's ``source`` struct schema that mark an event of the MySQL or MariaDB connector."""


def codec_for(schema: Any, depth: int = 0, *, mysql: bool = False) -> Codec:
    """The codec of one Connect field schema; raises :class:`SchemaError` when it cannot be mapped.

    ``mysql``: the field belongs to an event of the MySQL or MariaDB connector (``TIME`` is a duration).
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"a field schema must be an object, got {type(schema).__name__}")
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels")
    ctype, name = schema.get("type"), schema.get("name")
    named = _MYSQL_NAMED.get(name) if mysql and isinstance(name, str) else None
    if named is None and isinstance(name, str):
        named = _NAMED.get(name)
    if named is not None:
        expected, build = named
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
        return ListCodec(codec_for(items, depth + 1, mysql=mysql), _optional(items))
    if ctype == "map":
        keys = codec_for(schema.get("keys"), depth + 1, mysql=mysql)
        return MapCodec(keys, codec_for(schema.get("values"), depth + 1, mysql=mysql))
    if ctype == "struct":
        fields = struct_fields(schema, depth + 1, mysql=mysql)
        return StructCodec(fields, name if isinstance(name, str) else "struct")
    raise SchemaError(f"unsupported Connect type {ctype!r}")


def struct_fields(
    schema: Mapping[str, Any], depth: int = 0, *, mysql: bool = False
) -> tuple[FieldCodec, ...]:
    """The field codecs of a Connect struct schema, in schema order."""
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise SchemaError("a struct schema needs a list of fields")
    out: list[FieldCodec] = []
    for item in fields:
        name = item.get("field") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name:
            raise SchemaError(f"struct field without a name: {item!r}"[:200])
        out.append(FieldCodec(name, codec_for(item, depth, mysql=mysql), _optional(item)))
    if len({f.name for f in out}) != len(out):
        raise SchemaError("struct with duplicate field names")
    return tuple(out)


def _optional(schema: Any) -> bool:
    return not isinstance(schema, Mapping) or schema.get("optional", True) is not False


SEMANTIC_TYPES: Final[dict[str, str]] = {name: ctype for name, (ctype, _) in _NAMED.items()}
"""Semantic names with a dedicated decoding -> the Connect type they must have."""
