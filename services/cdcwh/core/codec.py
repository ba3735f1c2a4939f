"""Column codecs: turn the JSON values of one column of a batch into one typed Arrow array.

A codec has two paths. ``fast`` converts a whole column at once (vectorised with pyarrow where it can) and
raises on the first problem; :func:`decode_column` then re-runs the column value by value through ``one`` to
find which rows are bad, so one bad value costs its own row and never the batch. ``one`` returns a Python
value that ``pa.array(..., type=arrow_type)`` accepts, so codecs nest (lists, maps, structs).

Primitive codecs live here; nested ones in :mod:`cdcwh.core.nested`, temporal ones in
:mod:`cdcwh.core.temporal`, and the mapping from Connect schemas in :mod:`cdcwh.core.semantic`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.record import show

TOAST_PLACEHOLDER: Final = "__debezium_unavailable_value"
"""Debezium's ``unavailable.value.placeholder``: an unchanged TOASTed column that was not in the WAL."""
TOAST_PLACEHOLDER_B64: Final = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()
"""The placeholder as it arrives in a ``bytes`` column (the placeholder's bytes, base64 in JSON)."""


class ValueMismatch(ValueError):
    """A value does not fit its declared type."""


class Codec:
    """Converts JSON values of one declared type to Arrow. Subclasses set ``arrow_type`` and ``label``."""

    arrow_type: pa.DataType = pa.null()
    label: str = "null"
    toastable: bool = False
    """Whether the TOAST placeholder may stand in for a value of this type."""

    def one(self, value: Any) -> Any:
        """Convert one non-null JSON value; raise :class:`ValueMismatch` if it does not fit."""
        raise ValueMismatch(f"no value expected for {self.label}")

    def finish(self, values: list[Any]) -> pa.Array:
        """Build the Arrow array from values returned by :meth:`one` (``None`` for null)."""
        return pa.array(values, type=self.arrow_type)

    def fast(self, values: list[Any]) -> pa.Array:
        """Convert a whole column; raise on any bad value (the caller falls back to :meth:`one`)."""
        one = self.one
        return self.finish([None if v is None else one(v) for v in values])

    def fast_toasted(self, values: list[Any]) -> tuple[pa.Array, list[int]]:
        """:meth:`fast`, plus the rows holding the TOAST placeholder (nulled); raise on any bad value."""
        if not self.toastable:
            return self.fast(values), []
        is_toasted = self.is_toasted
        rows = [i for i, value in enumerate(values) if value is not None and is_toasted(value)]
        if rows:
            values = list(values)
            for i in rows:
                values[i] = None
        return self.fast(values), rows

    def is_toasted(self, value: Any) -> bool:
        """Whether ``value`` is the TOAST placeholder for this type."""
        return False

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        """:meth:`fast_toasted` of a column that arrives as an Arrow array (the Avro block reader's,
        :mod:`cdcwh.core.avro_batch`), without making Python values of it: the same result as
        ``fast_toasted(array.to_pylist())``, or ``None`` when this codec does not take such an array whole
        (then the caller makes the list; a bad value is then found value by value as usual). Each
        implementation takes its own class only: a subclass that converts otherwise is not bypassed."""
        return None


@dataclass(slots=True)
class ColumnResult:
    """A decoded column: the array (null where a value was bad or toasted) and the bad/toasted row indexes."""

    array: pa.Array
    errors: dict[int, str]
    toasted: list[int]


def decode_column(codec: Codec, values: list[Any] | pa.Array) -> ColumnResult:
    """Decode one column, vectorised when every value is good, row by row to isolate the bad ones. An Arrow
    array (the Avro block reader's) is taken whole when the codec can (:meth:`Codec.from_arrow`)."""
    if isinstance(values, pa.Array):
        try:
            whole = codec.from_arrow(values)
        except Exception:  # noqa: BLE001 - as fast_toasted: the list path finds the bad values
            whole = None
        if whole is not None:
            return ColumnResult(whole[0], {}, whole[1])
        values = values.to_pylist()
    try:
        array, toasted = codec.fast_toasted(values)
        return ColumnResult(array, {}, toasted)
    except Exception:  # any failure: find the culprits one value at a time
        return _decode_each(codec, values)


def _decode_each(codec: Codec, values: list[Any]) -> ColumnResult:
    out: list[Any] = []
    errors: dict[int, str] = {}
    toasted: list[int] = []
    for i, value in enumerate(values):
        if value is None:
            out.append(None)
        elif codec.toastable and codec.is_toasted(value):
            toasted.append(i)
            out.append(None)
        else:
            try:
                out.append(codec.one(value))
            except Exception as exc:
                errors[i] = f"value {show(value)} does not fit {codec.label}: {exc}"
                out.append(None)
    try:
        array = codec.finish(out)
    except Exception as exc:  # a codec bug: blame every non-null row rather than crash the batch
        for i, value in enumerate(out):
            if value is not None:
                errors.setdefault(i, f"{codec.label} could not be built: {exc}")
        array = pa.nulls(len(out), codec.arrow_type)
    return ColumnResult(array, errors, toasted)


class IntCodec(Codec):
    """Connect int8/int16/int32 -> Arrow int32 (Iceberg has no smaller ints), int64 -> int64."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.low, self.high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        self.arrow_type = pa.int64() if bits == 64 else pa.int32()
        self.label = f"int{bits}"

    def one(self, value: Any) -> Any:
        if type(value) is not int:
            raise ValueMismatch("not an integer")
        if not self.low <= value <= self.high:
            raise ValueMismatch("out of range")
        return value

    def fast(self, values: list[Any]) -> pa.Array:
        array = pa.array(values)  # strict inference: floats -> double, bools -> bool, mixes raise
        if array.type == pa.null():
            return pa.nulls(len(values), self.arrow_type)
        if array.type != pa.int64():
            raise ValueMismatch(f"inferred {array.type}")
        if self.bits < 32:
            bounds = pc.min_max(array).as_py()
            if bounds["min"] is not None and (bounds["min"] < self.low or bounds["max"] > self.high):
                raise ValueMismatch("out of range")
        return array.cast(self.arrow_type)

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        if type(self) is not IntCodec or not pa.types.is_integer(array.type):
            return None
        bounds = pc.min_max(array).as_py()
        if bounds["min"] is not None and (bounds["min"] < self.low or bounds["max"] > self.high):
            return None
        return array.cast(self.arrow_type), []


class FloatCodec(Codec):
    """Connect float32 -> float32, float64 -> float64. Accepts ints and Jackson's quoted NaN/Infinity."""

    _SPECIAL: Final = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

    def __init__(self, bits: int) -> None:
        self.arrow_type = pa.float32() if bits == 32 else pa.float64()
        self.label = f"float{bits}"

    def one(self, value: Any) -> Any:
        if type(value) is float or type(value) is int:
            return float(value)
        if isinstance(value, str) and value in self._SPECIAL:
            return self._SPECIAL[value]
        raise ValueMismatch("not a number")

    def fast(self, values: list[Any]) -> pa.Array:
        array = pa.array(values)
        if array.type not in (pa.float64(), pa.int64(), pa.null()):
            raise ValueMismatch(f"inferred {array.type}")
        return array.cast(self.arrow_type)

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        # a float32 to float64 and back is exact, as the list path's Python floats are
        exact = type(self) is FloatCodec and pa.types.is_floating(array.type)
        return (array.cast(self.arrow_type), []) if exact else None


class BoolCodec(Codec):
    """Connect boolean -> bool (JSON true/false only)."""

    arrow_type = pa.bool_()
    label = "boolean"

    def one(self, value: Any) -> Any:
        if type(value) is not bool:
            raise ValueMismatch("not a boolean")
        return value

    def fast(self, values: list[Any]) -> pa.Array:
        array = pa.array(values)
        if array.type == pa.null():
            return pa.nulls(len(values), self.arrow_type)
        if array.type != pa.bool_():
            raise ValueMismatch(f"inferred {array.type}")
        return array

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        return (array, []) if type(self) is BoolCodec and pa.types.is_boolean(array.type) else None


class StringCodec(Codec):
    """Connect string (and string-based semantic types: Json, Uuid, Enum, ...) -> string."""

    arrow_type = pa.string()

    def __init__(self, label: str = "string", *, toastable: bool = True) -> None:
        self.label = label
        self.toastable = toastable

    def one(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueMismatch("not a string")
        return value

    def fast(self, values: list[Any]) -> pa.Array:
        return pa.array(values, type=pa.string())

    def fast_toasted(self, values: list[Any]) -> tuple[pa.Array, list[int]]:
        return self._toasted(self.fast(values))

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        overridden = type(self).fast is not StringCodec.fast or type(self).one is not StringCodec.one
        if overridden or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            return None
        return self._toasted(array.cast(pa.string()))

    def _toasted(self, array: pa.Array) -> tuple[pa.Array, list[int]]:
        """The column with the TOAST placeholder nulled, and its rows."""
        if not self.toastable:
            return array, []
        placeholder = pc.equal(array, TOAST_PLACEHOLDER)
        if not pc.any(placeholder).as_py():
            return array, []
        rows = pc.indices_nonzero(placeholder.fill_null(False)).to_pylist()
        return pc.if_else(placeholder, pa.scalar(None, pa.string()), array), rows

    def is_toasted(self, value: Any) -> bool:
        return bool(value == TOAST_PLACEHOLDER)


class JsonTextCodec(StringCodec):
    """Inferred mixed or nested values -> their JSON text (strings are kept as they are)."""

    def __init__(self) -> None:
        super().__init__("json text (inferred)")

    def one(self, value: Any) -> Any:
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    def fast(self, values: list[Any]) -> pa.Array:
        return Codec.fast(self, values)


class BytesCodec(Codec):
    """Connect bytes (base64 in JSON) -> binary."""

    arrow_type = pa.binary()
    toastable = True

    def __init__(self, label: str = "bytes") -> None:
        self.label = label

    def one(self, value: Any) -> Any:
        return decode_base64(value)

    def is_toasted(self, value: Any) -> bool:
        return bool(value == TOAST_PLACEHOLDER_B64 or value == TOAST_PLACEHOLDER or value == _TOAST_BYTES)

    def from_arrow(self, array: pa.Array) -> tuple[pa.Array, list[int]] | None:
        if type(self) is not BytesCodec or not (
            pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)
        ):
            return None
        array = array.cast(pa.binary())
        placeholder = pc.equal(array, pa.scalar(_TOAST_BYTES, pa.binary()))  # bytes: the placeholder's own
        if not pc.any(placeholder).as_py():
            return array, []
        rows = pc.indices_nonzero(placeholder.fill_null(False)).to_pylist()
        return pc.if_else(placeholder, pa.scalar(None, pa.binary()), array), rows


_TOAST_BYTES: Final = TOAST_PLACEHOLDER.encode()


def decode_base64(value: Any) -> bytes:
    """Strict base64 (no stray characters, correct padding) as the JSON converter writes it; raw bytes (an
    Avro ``bytes`` value) are returned as they are."""
    if type(value) is bytes:
        return value
    if not isinstance(value, str):
        raise ValueMismatch("not a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueMismatch(f"not base64 ({exc})") from None


def require_int(value: Any) -> int:
    """``value`` if it is a JSON integer (not a bool or a float)."""
    if type(value) is not int:
        raise ValueMismatch("not an integer")
    return value


def int64_column(values: list[Any]) -> pa.Array:
    """An int64 array of JSON integers; raises if pyarrow infers anything else (floats, bools, text)."""
    array = pa.array(values)
    if array.type not in (pa.int64(), pa.null()):
        raise ValueMismatch(f"inferred {array.type}")
    return array.cast(pa.int64())
