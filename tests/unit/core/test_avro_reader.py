"""The generated Avro reader (``cdcwh.core.avro_reader``) against fastavro, the reference: values fastavro
writes for a schema using every Avro type read back equal to what fastavro itself reads (logical types off),
and damaged bodies never read as a whole value."""

from __future__ import annotations

import io
import json
import random
import struct
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from cdcwh.core.avro_reader import compile_reader

INNER = {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "long"}]}
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "t.ns",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "n", "type": "null"},
        {"name": "opt", "type": ["null", "string"], "default": None},
        {"name": "opt_last", "type": ["long", "null"]},
        {"name": "multi", "type": ["null", "long", "string", INNER]},
        {"name": "again", "type": ["null", "Inner"], "default": None},  # a reference by short name
        {"name": "full_ref", "type": "t.ns.Inner"},
        {"name": "e", "type": {"type": "enum", "name": "Mood", "symbols": ["sad", "ok", "happy"]}},
        {"name": "e2", "type": "Mood"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "arr", "type": {"type": "array", "items": ["null", "int"]}},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
        {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "date", "type": {"type": "int", "logicalType": "date", "connect.name": "x"}},
    ],
}


def strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical(v) for v in schema]
    return schema


def random_value(rng: random.Random) -> dict[str, Any]:
    big = rng.choice(
        [0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), rng.getrandbits(40)]
    )
    text = "".join(rng.choice("aé✓z\x00") for _ in range(rng.randrange(0, 300)))
    return {
        "b": rng.random() < 0.5,
        "i": rng.choice([0, -1, 2**31 - 1, -(2**31), rng.randrange(-1000, 1000)]),
        "l": big,
        "f": struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0],
        "d": rng.choice([rng.uniform(-1e300, 1e300), float("inf"), -0.0]),
        "s": text,
        "y": rng.randbytes(rng.randrange(0, 200)),
        "n": None,
        "opt": rng.choice([None, text]),
        "opt_last": rng.choice([None, big]),
        "multi": rng.choice([None, big, text, {"n": big}]),
        "again": rng.choice([None, {"n": 5}]),
        "full_ref": {"n": -7},
        "e": rng.choice(["sad", "ok", "happy"]),
        "e2": "happy",
        "fx": rng.randbytes(4),
        "arr": [rng.choice([None, rng.randrange(-5000, 5000)]) for _ in range(rng.randrange(0, 70))],
        "m": {str(k): [text] * rng.randrange(0, 3) for k in range(rng.randrange(0, 5))},
        "dec": rng.randbytes(rng.randrange(1, 6)),
        "date": rng.randrange(-100000, 100000),
    }


def write(value: dict[str, Any], schema: Any = SCHEMA) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(strip_logical(schema)), value)
    return out.getvalue()


def test_every_type_reads_back_as_fastavro_reads_it() -> None:
    rng = random.Random(20)
    reader = compile_reader(json.loads(json.dumps(SCHEMA)))
    reference = parse_schema(strip_logical(SCHEMA))
    for _ in range(300):
        body = write(random_value(rng))
        got, end = reader(body, 0)
        assert end == len(body)
        assert got == schemaless_reader(io.BytesIO(body), reference, None)


def test_blocks_with_byte_sizes_are_read() -> None:
    """Writers may give an array block a negative count followed by its size in bytes (fastavro does not)."""
    schema = {"type": "array", "items": "long"}
    body = bytes([3, 4, 2, 4, 0])  # count -2 (zig-zag 3), size 2 (zig-zag 4), items 1 and 2, end
    assert compile_reader(schema)(body, 0) == ([1, 2], 5)


@pytest.mark.parametrize("cut", [1, 5, 40, 100])
def test_a_truncated_body_never_reads_as_whole(cut: int) -> None:
    body = write(random_value(random.Random(cut)))
    reader = compile_reader(SCHEMA)
    try:
        _, end = reader(body[:-cut], 0)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        return
    assert end != len(body) - cut


def test_garbage_union_index_and_counts_are_refused() -> None:
    reader = compile_reader(
        {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["null", "long"]}]}
    )
    with pytest.raises(ValueError, match="union"):
        reader(b"\x08", 0)
    array = compile_reader({"type": "array", "items": "null"})
    with pytest.raises(ValueError, match="block count"):
        array(b"\xfe\xff\xff\xff\x0f", 0)  # two billion nulls in five bytes


@pytest.mark.parametrize("body", [b"\x01", b"\x81\x01"], ids=["one-byte", "two-byte"])
def test_a_negative_length_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="negative length"):
        compile_reader("string")(body, 0)
    with pytest.raises(ValueError, match="negative length"):
        compile_reader({"type": "record", "name": "R", "fields": [{"name": "b", "type": "bytes"}]})(body, 0)


@pytest.mark.parametrize("bad", [b"\x01", b"\x06", b"\x81\x01"], ids=["minus-one", "three", "two-byte-minus"])
def test_an_enum_index_outside_the_symbols_is_refused(bad: bytes) -> None:
    """-1 would read the last symbol (Python's negative index); 3 is past the three symbols. Both the inline
    enum (field a) and the named type's function (field b) check."""
    mood = {"type": "enum", "name": "Mood", "symbols": ["sad", "ok", "happy"]}
    fields = [{"name": "a", "type": mood}, {"name": "b", "type": "Mood"}]
    reader = compile_reader({"type": "record", "name": "R", "fields": fields})
    assert reader(b"\x00\x04", 0) == ({"a": "sad", "b": "happy"}, 2)
    with pytest.raises(ValueError, match="enum index"):
        reader(bad + b"\x00", 0)
    with pytest.raises(ValueError, match="enum index"):
        reader(b"\x00" + bad, 0)


@pytest.mark.parametrize("bad", [b"\x01", b"\x08", b"\x81\x01"], ids=["minus-one", "four", "two-byte-minus"])
def test_a_union_index_outside_the_branches_is_refused(bad: bytes) -> None:
    reader = compile_reader(["null", "long", "string"])
    assert reader(b"\x02\x06", 0) == (3, 2)
    with pytest.raises(ValueError, match="union index"):
        reader(bad + b"\x00", 0)


def zigzag(n: int) -> bytes:
    """The Avro varint of ``n``, written here independently of the reader (any width)."""
    value, out = (n << 1) ^ (n >> 200), bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_long_and_int_bounds_are_read() -> None:
    for n in (2**63 - 1, -(2**63), 0, -1, 300):
        assert compile_reader("long")(zigzag(n), 0) == (n, len(zigzag(n)))
    for n in (2**31 - 1, -(2**31)):
        assert compile_reader("int")(zigzag(n), 0) == (n, len(zigzag(n)))


@pytest.mark.parametrize(
    ("schema", "body", "match"),
    [
        ("long", b"\x80" * 10 + b"\x00", "longer than 10 bytes"),  # an overlong zero, 11 bytes
        ("long", zigzag(2**63), "beyond int64"),
        ("long", zigzag(-(2**63) - 1), "beyond int64"),
        ("long", b"\xff" * 9 + b"\x7f", "beyond int64"),  # 10 bytes, 70 bits
        ("int", zigzag(2**31), "beyond int32"),
        ("int", zigzag(-(2**31) - 1), "beyond int32"),
        ({"type": "record", "name": "R", "fields": [{"name": "i", "type": "int"}]}, zigzag(2**40), "int32"),
    ],
)
def test_overlong_and_out_of_range_varints_are_refused(schema: Any, body: bytes, match: str) -> None:
    assert len(body) <= 11
    with pytest.raises(ValueError, match=match):
        compile_reader(schema)(body, 0)


EMPTY = {"type": "record", "name": "Empty", "fields": []}


@pytest.mark.parametrize("items", ["null", EMPTY, {"type": "fixed", "name": "Zero", "size": 0}])
def test_arrays_of_zero_byte_items_are_read(items: Any) -> None:
    """A hundred zero-byte items in a three-byte body: the count may exceed the bytes left."""
    schema = {"type": "array", "items": items}
    value = [None if items == "null" else {} if items is EMPTY else b""] * 100
    body = write(value, schema)  # type: ignore[arg-type]
    assert len(body) < 100
    assert compile_reader(schema)(body, 0) == (value, len(body))


def test_items_in_a_value_are_bounded_across_blocks_and_nestings() -> None:
    from cdcwh.core.avro_reader import MAX_ITEMS

    schema = {"type": "array", "items": {"type": "array", "items": "null"}}
    half = MAX_ITEMS // 2
    within = zigzag(2) + (zigzag(half - 1) + zigzag(0)) * 2 + zigzag(0)
    assert compile_reader(schema)(within, 0)[1] == len(within)
    beyond = zigzag(2) + (zigzag(half) + zigzag(0)) * 2 + zigzag(0)  # 2 + MAX items with the outer two
    with pytest.raises(ValueError, match="block count"):
        compile_reader(schema)(beyond, 0)


def test_a_block_count_beyond_the_bytes_left_is_refused() -> None:
    """Longs take a byte each: a second block asking for more than the bytes after it is refused."""
    schema = {"type": "array", "items": "long"}
    body = zigzag(3) + b"\x02\x04\x06" + zigzag(6) + b"\x02\x04\x06\x08" + zigzag(0)  # 6 > 5 left
    with pytest.raises(ValueError, match="block count"):
        compile_reader(schema)(body, 0)
    good = zigzag(3) + b"\x02\x04\x06" + zigzag(4) + b"\x02\x04\x06\x08" + zigzag(0)
    assert compile_reader(schema)(good, 0) == ([1, 2, 3, 1, 2, 3, 4], len(good))


@pytest.mark.parametrize("byte", [2, 0x80, 0xFF])
def test_a_boolean_byte_other_than_0_or_1_is_refused(byte: int) -> None:
    reader = compile_reader({"type": "record", "name": "R", "fields": [{"name": "b", "type": "boolean"}]})
    assert reader(b"\x00", 0) == ({"b": False}, 1)
    assert reader(b"\x01", 0) == ({"b": True}, 1)
    with pytest.raises(ValueError, match="boolean"):
        reader(bytes([byte]), 0)


SKIPPED = {
    "type": "record",
    "name": "S",
    "fields": [
        {"name": "skipped", "type": ["null", {"type": "long", "connect.name": "c"}]},
        {"name": "kept", "type": "int"},
    ],
}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x02" + b"\x80" * 10 + b"\x00" + b"\x02", "longer than 10 bytes"),
        (b"\x02" + b"\xff" * 9 + b"\x7f" + b"\x02", "beyond int64"),
        (b"\x04" + b"\x02", "union index out of range"),
    ],
)
def test_a_field_read_past_is_checked_as_a_kept_one(body: bytes, match: str) -> None:
    """The projection reads past a field without building it, but refuses what reading it would refuse."""
    with pytest.raises(ValueError, match=match):
        compile_reader(SKIPPED, {"S": frozenset({"kept"})})(body, 0)
    with pytest.raises(ValueError, match=match):
        compile_reader(SKIPPED)(body, 0)


def test_a_field_read_past_ends_where_fastavro_ends_it() -> None:
    for n in (0, 63, 64, 2**40, 2**63 - 1, -(2**63)):
        body = b"\x02" + zigzag(n) + zigzag(7)
        assert compile_reader(SKIPPED, {"S": frozenset({"kept"})})(body, 0) == ({"kept": 7}, len(body))
