"""A decoder for Avro binary bodies, generated as Python source per writer schema and compiled once.

fastavro's compiled reader interprets the schema for every value and reads through a file object, a ``read``
call per byte of a varint: on the shop events its block reader (one in-memory container per schema id and
batch) costs 1.7x this reader, its ``schemaless_reader`` more (docs/decoding.md, "Throughput"). This reader
is specialised to one schema: it indexes the ``bytes`` directly, short varints inline (longer ones unrolled),
one function per record type and per array or map (so that a deeply nested schema is not deeply nested
code); record fields outside ``keep`` are read past without being built. It returns
plain values (``bytes`` for bytes and fixed, ``str``, ``int``, ``float``, ``bool``, dicts for records, lists,
dicts for maps). Logical types are not applied (the codecs want the wire values). The schema must already
be valid (fastavro's ``parse_schema`` checks it first, :mod:`cdcwh.core.avro`).

``compile_reader(schema)(buf, pos) -> (value, end)``. Truncated input raises ``IndexError`` or
``struct.error`` or ends past ``len(buf)`` (slices do not raise): callers check ``end == len(buf)``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

Reader = Callable[[bytes, int], tuple[Any, int]]

_PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_SKIPPABLE: Final = frozenset({"null", "long", "bytes", "string"})
MAX_ITEMS: Final = 1 << 20
"""Array and map items in one value, all blocks and nestings together: items of zero bytes (``null``, an
empty record) are otherwise bounded by nothing (a five-byte block count asks for two billion)."""


def _varint(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The zig-zag varint (an Avro ``long``) whose first byte (>= 0x80) was ``first``; ``pos`` is just after
    it. At most 10 bytes, and no bits beyond the 64 of an int64. Unrolled: a timestamp takes 6 to 9 bytes,
    and a loop costs half as much again."""
    b = buf[pos]
    v = (first & 0x7F) | (b & 0x7F) << 7
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 1
    b = buf[pos + 1]
    v |= (b & 0x7F) << 14
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 2
    b = buf[pos + 2]
    v |= (b & 0x7F) << 21
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 3
    b = buf[pos + 3]
    v |= (b & 0x7F) << 28
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 4
    b = buf[pos + 4]
    v |= (b & 0x7F) << 35
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 5
    b = buf[pos + 5]
    v |= (b & 0x7F) << 42
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 6
    b = buf[pos + 6]
    v |= (b & 0x7F) << 49
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 7
    b = buf[pos + 7]
    v |= (b & 0x7F) << 56
    if b < 0x80:
        return (v >> 1) ^ -(v & 1), pos + 8
    b = buf[pos + 8]
    if b >= 0x80:
        raise ValueError("varint longer than 10 bytes")
    if b > 1:
        raise ValueError("varint beyond int64")
    v |= b << 63
    return (v >> 1) ^ -(v & 1), pos + 9


def _skip_long(buf: bytes, pos: int) -> int:
    """The end of a varint whose first byte (>= 0x80) was just before ``pos``, not decoded; refused as
    :func:`_varint` refuses it."""
    end = pos + 8
    while pos < end:
        if buf[pos] < 0x80:
            return pos + 1
        pos += 1
    b = buf[pos]
    if b >= 0x80:
        raise ValueError("varint longer than 10 bytes")
    if b > 1:
        raise ValueError("varint beyond int64")
    return pos + 1


def _varint32(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """An Avro ``int``: a varint within int32 (at most 5 bytes)."""
    value, pos = _varint(buf, pos, first)
    if not -(2**31) <= value < 2**31:
        raise ValueError("int beyond int32")
    return value, pos


def _length(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """A string or bytes length whose first byte is odd (negative) or continues (>= 0x80)."""
    if first < 0x80:
        length = (first >> 1) ^ -(first & 1)
    else:
        length, pos = _varint(buf, pos, first)
    if length < 0:
        raise ValueError("negative length")
    return length, pos


def _bad(what: str) -> Any:
    raise ValueError(what)


_HELPERS: Final = {
    "_varint": _varint,
    "_skip_long": _skip_long,
    "_varint32": _varint32,
    "_bad": _bad,
    "_length": _length,
    "_float": struct.Struct("<f").unpack_from,
    "_double": struct.Struct("<d").unpack_from,
}


class _Generator:
    def __init__(self, keep: Mapping[str, frozenset[str]]) -> None:
        self.keep = keep
        self.functions: dict[str, str] = {}  # record fullname -> function name
        self.sources: list[str] = []
        self.constants: dict[str, Any] = {}
        self.counter = 0
        self.named_schemas: dict[str, dict[str, Any]] = {}  # full name -> schema, for nonempty()

    def var(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def record(self, schema: dict[str, Any], namespace: str) -> str:
        name = str(schema["name"])
        space = name.rpartition(".")[0] if "." in name else str(schema.get("namespace", namespace))
        full = name if "." in name or not space else f"{space}.{name}"
        function = self.functions.get(full)
        if function is not None:
            return function
        function = self.functions[full] = f"_record{len(self.functions)}"
        self.named_schemas[full] = schema
        lines = [f"def {function}(buf, pos, st):"]
        names = []
        kept = self.keep.get(full)
        for field in schema["fields"]:
            target = self.var("f")
            if kept is not None and field["name"] not in kept:
                self.skip(field["type"], target, space, lines)
                continue
            names.append((str(field["name"]), target))
            self.emit(field["type"], target, space, lines, 1)
        items = ", ".join(f"{n!r}: {t}" for n, t in names)
        lines.append(f"    return {{{items}}}, pos")
        self.sources.append("\n".join(lines))
        return function

    def emit(self, schema: Any, target: str, namespace: str, lines: list[str], depth: int) -> None:
        pad = "    " * depth
        if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
            # ["null", X] (an optional Connect field) or [X, "null"]: the index is one byte, 0x00 or 0x02
            null_at = schema.index("null")
            other = schema[1 - null_at]
            index = self.var("u")
            lines.append(f"{pad}{index} = buf[pos]; pos += 1")
            lines.append(f"{pad}if {index} == {2 * (1 - null_at)}:")
            self.emit(other, target, namespace, lines, depth + 1)
            lines.append(f"{pad}elif {index} == {2 * null_at}:")
            lines.append(f"{pad}    {target} = None")
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    {target} = _bad('union index out of range')")
            return
        if isinstance(schema, list):
            index = self.var("u")
            self.long(index, lines, depth)
            for i, branch in enumerate(schema):
                lines.append(f"{pad}{'if' if i == 0 else 'elif'} {index} == {i}:")
                self.emit(branch, target, namespace, lines, depth + 1)
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    {target} = _bad('union index out of range')")
            return
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                self.primitive(schema, target, lines, depth)
                return
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            function = self.functions.get(full) or self.functions.get(schema)
            if function is None:
                raise ValueError(f"unknown named type {schema!r}")
            lines.append(f"{pad}{target}, pos = {function}(buf, pos, st)")
            return
        kind = schema["type"]
        if kind == "record" or kind == "error":
            function = self.record(schema, namespace)
            lines.append(f"{pad}{target}, pos = {function}(buf, pos, st)")
        elif kind == "enum":
            symbols = self.var("_symbols")
            self.constants[symbols] = tuple(schema["symbols"])
            self.named(schema, namespace, symbols, "enum")
            index = self.var("e")
            self.long(index, lines, depth)
            lines.append(f"{pad}if not 0 <= {index} < {len(schema['symbols'])}:")
            lines.append(f"{pad}    _bad('enum index out of range')")
            lines.append(f"{pad}{target} = {symbols}[{index}]")
        elif kind == "fixed":
            size = int(schema["size"])
            self.named(schema, namespace, str(size), "fixed")
            lines.append(f"{pad}{target} = buf[pos:pos + {size}]; pos += {size}")
        elif kind == "array" or kind == "map":
            self.block(schema, target, namespace, lines, depth)
        elif kind in _PRIMITIVES:
            self.primitive(kind, target, lines, depth)
        else:
            self.emit(kind, target, namespace, lines, depth)  # {"type": "Name"} or {"type": [...]}

    def skip(self, schema: Any, target: str, namespace: str, lines: list[str], depth: int = 1) -> None:
        """Read past a value that is not kept, checked as :meth:`emit` checks it but not built: strings and
        bytes are neither copied nor decoded (so not checked to be UTF-8), longs not assembled."""
        pad = "    " * depth
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if isinstance(schema, dict) and (isinstance(kind, list) or kind in _SKIPPABLE):
            schema = kind  # {"type": "string", "connect.name": ...}: the primitive
        if schema in ("string", "bytes"):
            lines.append(f"{pad}{target} = buf[pos]; pos += 1")
            lines.append(f"{pad}if {target} < 0x80 and not {target} & 1:")
            lines.append(f"{pad}    {target} >>= 1")
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    {target}, pos = _length(buf, pos, {target})")
            lines.append(f"{pad}pos += {target}")
        elif schema == "long":
            lines.append(f"{pad}if buf[pos] < 0x80:")
            lines.append(f"{pad}    pos += 1")
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    pos = _skip_long(buf, pos + 1)")
        elif schema == "null":
            pass
        elif isinstance(schema, list) and len(schema) == 2 and "null" in schema:
            null_at = schema.index("null")
            index = self.var("u")
            lines.append(f"{pad}{index} = buf[pos]; pos += 1")
            lines.append(f"{pad}if {index} == {2 * (1 - null_at)}:")
            before = len(lines)
            self.skip(schema[1 - null_at], target, namespace, lines, depth + 1)
            if len(lines) == before:
                lines.append(f"{pad}    pass")
            lines.append(f"{pad}elif {index} != {2 * null_at}:")
            lines.append(f"{pad}    _bad('union index out of range')")
        else:
            self.emit(schema, target, namespace, lines, depth)

    def named(self, schema: dict[str, Any], namespace: str, value: str, kind: str) -> None:
        """Enums and fixed referred to by name later: a one-value reader function."""
        name = str(schema["name"])
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        if full in self.functions:
            return
        function = self.functions[full] = f"_named{len(self.functions)}"
        self.named_schemas[full] = schema
        lines = [f"def {function}(buf, pos, st):"]
        if kind == "enum":
            self.long("i", lines, 1)
            lines.append(f"    if not 0 <= i < len({value}):")
            lines.append("        _bad('enum index out of range')")
            lines.append(f"    return {value}[i], pos")
        else:
            lines.append(f"    return buf[pos:pos + {value}], pos + {value}")
        self.sources.append("\n".join(lines))

    def block(
        self, schema: dict[str, Any], target: str, namespace: str, lines: list[str], depth: int
    ) -> None:
        """An array or map: a function of its own, so that nesting in the schema is not nesting of blocks in
        one function (Python allows 20)."""
        is_map = schema["type"] == "map"
        function = f"_block{self.var('')}"
        lines.append(f"{'    ' * depth}{target}, pos = {function}(buf, pos, st)")
        body = [f"def {function}(buf, pos, st):"]
        count, item, key = self.var("c"), self.var("x"), self.var("k")
        body.append("    out = {}" if is_map else "    out = []")
        body.append("    while True:")
        self.long(count, body, 2)
        body.append(f"        if {count} == 0:")
        body.append("            return out, pos")
        body.append(f"        if {count} < 0:")
        body.append(f"            {count} = -{count}")
        self.long(self.var("size"), body, 3)
        items = schema["values" if is_map else "items"]
        if is_map or self.nonempty(items, namespace):  # each item takes a byte at least: bounded by the data
            body.append(f"        if {count} > len(buf) - pos:")
            body.append("            _bad('block count beyond the data')")
        body.append(f"        st[0] -= {count}")
        body.append("        if st[0] < 0:")
        body.append(f"            _bad('block count beyond {MAX_ITEMS} items in a value')")
        body.append(f"        for _ in range({count}):")
        if is_map:
            self.primitive("string", key, body, 3)
        self.emit(items, item, namespace, body, 3)
        body.append(f"            out[{key}] = {item}" if is_map else f"            out.append({item})")
        self.sources.append("\n".join(body))

    def nonempty(self, schema: Any, namespace: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether every value of ``schema`` takes one byte at least (``null``, an empty record, a fixed of
        size 0 take none); ``False`` when unsure (a record that refers to itself)."""
        if isinstance(schema, list):
            return True  # the branch index
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema != "null"
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            named = self.named_schemas.get(full) or self.named_schemas.get(schema)
            if named is None or full in seen:
                return False
            return self.nonempty(named, full.rpartition(".")[0], seen | {full})
        kind = schema["type"]
        if kind in ("record", "error"):
            name = str(schema["name"])
            space = name.rpartition(".")[0] if "." in name else str(schema.get("namespace", namespace))
            full = name if "." in name or not space else f"{space}.{name}"
            inner = seen | {full}
            return any(self.nonempty(f["type"], space, inner) for f in schema["fields"])
        if kind == "fixed":
            return int(schema["size"]) > 0
        if kind in ("enum", "array", "map"):
            return True
        return self.nonempty(kind, namespace, seen)

    def long(self, target: str, lines: list[str], depth: int, varint: str = "_varint") -> None:
        pad = "    " * depth
        lines.append(f"{pad}{target} = buf[pos]; pos += 1")
        lines.append(f"{pad}if {target} < 0x80:")
        lines.append(f"{pad}    {target} = ({target} >> 1) ^ -({target} & 1)")
        lines.append(f"{pad}else:")
        lines.append(f"{pad}    {target}, pos = {varint}(buf, pos, {target})")

    def primitive(self, kind: str, target: str, lines: list[str], depth: int) -> None:
        pad = "    " * depth
        if kind == "null":
            lines.append(f"{pad}{target} = None")
        elif kind == "boolean":
            lines.append(f"{pad}{target} = buf[pos]; pos += 1")
            lines.append(f"{pad}if {target} > 1:")
            lines.append(f"{pad}    _bad('boolean byte other than 0 or 1')")
            lines.append(f"{pad}{target} = {target} == 1")
        elif kind in ("int", "long"):
            self.long(target, lines, depth, "_varint32" if kind == "int" else "_varint")
        elif kind == "float":
            lines.append(f"{pad}{target} = _float(buf, pos)[0]; pos += 4")
        elif kind == "double":
            lines.append(f"{pad}{target} = _double(buf, pos)[0]; pos += 8")
        else:  # bytes, string: a length, non-negative (an even first byte below 0x80 is the common case)
            size = self.var("n")
            lines.append(f"{pad}{size} = buf[pos]; pos += 1")
            lines.append(f"{pad}if {size} < 0x80 and not {size} & 1:")
            lines.append(f"{pad}    {size} >>= 1")
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    {size}, pos = _length(buf, pos, {size})")
            read = f"buf[pos:pos + {size}]"
            lines.append(f"{pad}{target} = {read if kind == 'bytes' else read + '.decode()'}; pos += {size}")


def compile_reader(schema: Any, keep: Mapping[str, frozenset[str]] | None = None) -> Reader:
    """A reader for values of the (valid) Avro ``schema``: ``reader(buf, pos) -> (value, end)``.

    ``keep`` projects records: ``{record full name: field names}``; the other fields of such a record are
    read past and left out of its dict (still checked to be there)."""
    generator = _Generator(keep or {})
    lines = ["def _read(buf, pos):", f"    st = [{MAX_ITEMS}]"]
    generator.emit(schema, "value", "", lines, 1)
    lines.append("    return value, pos")
    namespace: dict[str, Any] = {**_HELPERS, **generator.constants}
    source = "\n\n".join([*generator.sources, "\n".join(lines)])
    exec(compile(source, "<avro reader>", "exec"), namespace)  # noqa: S102 - our own generated code
    reader: Reader = namespace["_read"]
    return reader
