"""Many Avro bodies of one writer schema read at once, into Arrow columns, by polars' native Avro reader.

The generated reader (:mod:`cdcwh.core.avro_reader`) reads one body at a time in Python; for a batch's
bodies of one schema id this module is the fast path (docs/decoding.md, "Throughput"). The bodies are
concatenated into the single data block of an in-memory Avro object container whose schema is the writer
schema made plain: named types written out where they are referred to, and without defaults, logical types
or properties, none of which changes the binary layout (polars refuses Connect's named-type references and
non-null defaults, and reads a ``Decimal`` as the unscaled bytes only without its logical type, as the codecs
want it). Schemas with a map, an enum, a fixed, a union other than two branches one of which is null,
a ``null`` outside such a union, or an array of items that take no bytes are not taken
(:func:`block_schema` returns ``None``): the generated reader reads those.

A block reader says neither where one body ended nor which body was bad: a truncated body fails the whole
block, and a body with bytes after it shifts the bodies after it silently. So every body's values are
encoded again, in lengths only and column-wise (:func:`encoded_lengths`), and must come to exactly the
body's length: Avro's binary encoding is unique for given values, except for varints written longer than
needed, which no Avro writer does (a body with them fails the check and takes the generated reader). Any
failure or difference returns ``None`` and the caller reads each body with the generated reader, which
says which body is bad and why.

A row whose values polars reads otherwise than the generated reader is marked to be read alone (the rest of
the block stays): an ``int`` beyond 32 bits (an ``int`` is read as a ``long``, the same varint, so it is
seen rather than wrapped), a ``long`` of a 10-byte varint (polars drops the bits beyond 64 that the generated
reader refuses; only values beyond +-2^62 take ten bytes), more than ``MAX_ITEMS`` array items in a body.
What the block reader does not see (corrupt bytes that keep every length and read as a valid value): a
boolean byte other than 0 or 1 (polars reads it as false) and a union index beyond the union (polars reads
any index but the first as the second branch). The generated reader refuses both; no Avro writer writes
them, and Kafka's record-batch CRC, checked by the consumer, stands between a body as written and the
decoder.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.avro_reader import MAX_ITEMS

_PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FIXED_WIDTH: Final = {"boolean": 1, "float": 4, "double": 8}
_SYNC: Final = bytes(16)
_MAX_DEPTH: Final = 32
_MAX_NODES: Final = 10_000
_INT64_BITS: Final = 64
_LIMITS: Final = {"int": (-(2**31), 2**31 - 1), "long": (-(2**62), 2**62 - 1)}
"""The values the block reader takes: an ``int`` within 32 bits; a ``long`` of at most 9 varint bytes."""
_VARINT_STEPS: Final = np.array([1 << bits for bits in range(6, 63, 7)], np.int64)
"""``u`` from which a zig-zag varint takes one more byte: 2^6, 2^13, ... 2^62."""


class Unsupported(ValueError):
    """The schema holds a type the block reader is not used for."""


@dataclass(frozen=True, slots=True)
class BlockSchema:
    """A writer schema made plain (``schema``) and the object container header that declares it."""

    schema: Any
    header: bytes


def block_schema(document: Any) -> BlockSchema | None:
    """The plain form of a writer schema (a parsed Avro schema document), or ``None`` if not supported."""
    try:
        plain = _Plain().convert(document, "", 0)
    except (Unsupported, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(plain, dict) or plain.get("type") != "record":
        return None
    metadata = avro_count(2) + _string(b"avro.schema") + _string(orjson.dumps(_as_read(plain)))
    metadata += _string(b"avro.codec") + _string(b"null") + b"\x00"
    return BlockSchema(plain, b"Obj\x01" + metadata + _SYNC)


@dataclass(frozen=True, slots=True)
class Block:
    """The bodies read, one row each, and the rows to read one at a time all the same (``alone``)."""

    table: pa.Table
    alone: list[bool]


def read_bodies(block: BlockSchema, bodies: Sequence[bytes | memoryview]) -> Block | None:
    """The bodies (without the 5-byte header) as one row each, or ``None`` when they are to be read one at
    a time: the reader fails on any, or a body's length differs from its values'. A row whose values the
    generated reader decides otherwise than polars reads them is marked ``alone``: an ``int`` beyond 32 bits,
    a ``long`` of a 10-byte varint (polars drops the bits beyond 64 that the generated reader refuses), more
    than ``MAX_ITEMS`` array items in a body."""
    import polars as pl  # noqa: PLC0415 - 70 ms to import; only ingest of Avro topics needs it
    from polars.exceptions import PanicException  # noqa: PLC0415

    data = b"".join(bodies)
    container = block.header + avro_count(len(bodies)) + avro_count(len(data)) + data + _SYNC
    try:
        table = pl.read_avro(io.BytesIO(container)).to_arrow(compat_level=pl.CompatLevel.oldest())
    except (Exception, PanicException):  # noqa: BLE001 - a bad body (a panic is a BaseException)
        return None
    if table.num_rows != len(bodies):
        return None
    counts = encoded_lengths(block.schema, table)
    if not np.array_equal(counts.lengths, np.fromiter(map(len, bodies), np.int64, len(bodies))):
        return None
    alone = (counts.beyond > 0) | (counts.items > MAX_ITEMS)
    return Block(table, alone.tolist())


class Counts(NamedTuple):
    """Per row of a block: what its values take."""

    lengths: npt.NDArray[np.int64]
    """Bytes, encoded."""
    items: npt.NDArray[np.int64]
    """Array items, all arrays of the value, nested ones too."""
    beyond: npt.NDArray[np.int64]
    """Integers beyond what the block reader reads as the generated reader does (:data:`_LIMITS`)."""


def encoded_lengths(schema: Any, table: pa.Table) -> Counts:
    """The :class:`Counts` of each row of ``table`` encoded with the plain record ``schema`` (a null of a
    union counts its index byte only)."""
    columns = zip(schema["fields"], table.columns, strict=True)
    return _sum(
        [_counts(f["type"], c.combine_chunks()) for f, c in columns], np.zeros(table.num_rows, np.int64)
    )


def _sum(parts: list[Counts], zero: npt.NDArray[np.int64]) -> Counts:
    return Counts(*(sum((p[i] for p in parts), zero) for i in range(3)))


def _counts(schema: Any, array: pa.Array) -> Counts:
    zero = np.zeros(len(array), np.int64)
    if isinstance(schema, list):  # [null, X]: the branch index (one byte), then X unless null
        inner = _counts(next(s for s in schema if s != "null"), array)
        if array.null_count:
            valid = array.is_valid().to_numpy(zero_copy_only=False)
            inner = Counts(*(np.where(valid, part, 0) for part in inner))
        return Counts(inner.lengths + 1, inner.items, inner.beyond)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in _FIXED_WIDTH:
        return Counts(np.full(len(array), _FIXED_WIDTH[kind], np.int64), zero, zero)
    if kind in ("int", "long"):
        values: npt.NDArray[np.int64] = array.fill_null(0).to_numpy().astype(np.int64, copy=False)
        low, high = _LIMITS[kind]
        beyond = ((values < low) | (values > high)).astype(np.int64)
        return Counts(_varint_lengths(values), zero, beyond)
    if kind in ("bytes", "string"):
        sizes: npt.NDArray[np.int64] = pc.binary_length(array).fill_null(0).to_numpy().astype(np.int64)
        return Counts(sizes + _varint_lengths(sizes), zero, zero)
    if kind == "array":  # one block (count, items, then 0) unless empty (0): as every Avro writer writes it
        offsets = array.offsets.to_numpy().astype(np.int64)
        inner = _counts(schema["items"], array.values)
        counts = offsets[1:] - offsets[:-1]
        lengths = np.where(counts > 0, _varint_lengths(counts) + _per_list(inner.lengths, offsets) + 1, 1)
        items = counts + _per_list(inner.items, offsets)
        return Counts(lengths, items, _per_list(inner.beyond, offsets))
    # a record: its fields, whatever a null parent's children hold
    return _sum([_counts(f["type"], array.field(i)) for i, f in enumerate(schema["fields"])], zero)


def _per_list(values: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The sum of ``values`` over each list's slice ``offsets[i]:offsets[i + 1]``."""
    ends = np.concatenate(([0], np.cumsum(values)))
    result: npt.NDArray[np.int64] = ends[offsets[1:]] - ends[offsets[:-1]]
    return result


def _varint_lengths(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Bytes of the zig-zag varint of each integer: 1, plus 1 for each 7 bits beyond the first 6 of
    ``u``, where ``u`` is ``v`` for ``v >= 0`` and ``-v - 1`` otherwise (the zig-zag value is ``2u`` or
    ``2u + 1``)."""
    magnitude = values ^ (values >> (_INT64_BITS - 1))
    return np.searchsorted(_VARINT_STEPS, magnitude, side="right") + 1


def _as_read(schema: Any) -> Any:
    """The plain schema as the block reader is given it: ``int`` as ``long`` (the same varint), so that a
    body whose ``int`` goes beyond 32 bits is seen (:func:`_counts`) rather than read wrapped."""
    if schema == "int":
        return "long"
    if isinstance(schema, list):
        return [_as_read(s) for s in schema]
    if isinstance(schema, dict):
        if schema["type"] == "record":
            fields = [{"name": f["name"], "type": _as_read(f["type"])} for f in schema["fields"]]
            return {**schema, "fields": fields}
        return {**schema, "items": _as_read(schema["items"])}  # an array
    return schema


def _qualified(name: str, namespace: str) -> str:
    """A name as referred to within ``namespace``: the spec looks there first (a dotted name is full)."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _zero_width(schema: Any) -> bool:
    """Whether a value of the plain ``schema`` takes no bytes (a record without fields, or of such)."""
    return (
        isinstance(schema, dict)
        and schema["type"] == "record"
        and all(_zero_width(f["type"]) for f in schema["fields"])
    )


def avro_count(n: int) -> bytes:
    """An Avro ``long`` >= 0 (zig-zag: doubled), as a count or a size in an object container."""
    value, out = n << 1, bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return avro_count(len(data)) + data


class _Plain:
    """Writes a schema out plain: references by name replaced by the named type, records renamed uniquely."""

    def __init__(self) -> None:
        self.named: dict[str, tuple[dict[str, Any], str]] = {}
        self.records = 0
        self.nodes = 0

    def convert(self, schema: Any, namespace: str, depth: int) -> Any:
        self.nodes += 1
        if depth > _MAX_DEPTH or self.nodes > _MAX_NODES:  # references written out can multiply a schema
            raise Unsupported("nested too deep or too large once written out")
        if isinstance(schema, list):
            if len(schema) != 2 or schema.count("null") != 1:
                raise Unsupported(f"union {schema!r}")
            return [s if s == "null" else self.convert(s, namespace, depth + 1) for s in schema]
        if isinstance(schema, str):
            if schema == "null":
                raise Unsupported("null outside a union")  # polars does not read it
            if schema in _PRIMITIVES:
                return schema
            named = self.named.get(_qualified(schema, namespace)) or self.named.get(schema)
            if named is None:
                raise Unsupported(f"unknown type {schema!r}")
            return self.convert(*named, depth + 1)
        kind = schema["type"]
        if kind == "record":
            name = str(schema["name"])
            space = str(schema.get("namespace", namespace)) if "." not in name else name.rsplit(".", 1)[0]
            fullname = name if "." in name or not space else f"{space}.{name}"
            self.named[fullname] = (schema, namespace)
            self.records += 1
            renamed = f"r{self.records}"  # numbered before its fields: names stay unique
            fields = [
                {"name": str(f["name"]), "type": self.convert(f["type"], space, depth + 1)}
                for f in schema["fields"]
            ]
            return {"type": "record", "name": renamed, "fields": fields}
        if kind == "array":
            items = self.convert(schema["items"], namespace, depth + 1)
            if _zero_width(items):  # a block count alone could then ask for billions of items
                raise Unsupported("an array of items that take no bytes")
            return {"type": "array", "items": items}
        if kind in _PRIMITIVES:
            return self.convert(kind, namespace, depth + 1)
        if isinstance(kind, (list, dict)):
            return self.convert(kind, namespace, depth + 1)
        raise Unsupported(f"type {kind!r}")
