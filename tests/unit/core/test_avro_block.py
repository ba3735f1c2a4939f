"""The block reader (``cdcwh.core.avro_block``: many bodies at once, polars' native Avro reader) and the
columnar branch of ``decode_batch`` it feeds (``cdcwh.core.avro_batch``).

The expected values come from elsewhere: fastavro writes and reads every random body, the real
AvroConverter capture of the type zoo must decode as its JsonConverter capture does (test_avro.py runs that
comparison through both branches), and the record-at-a-time path (the generated reader, pinned by
test_avro_reader*.py) is the reference for every decision the columnar branch makes."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcwh.core import RawRecord, avro_batch, decode_batch
from cdcwh.core.avro import WriterSchemas
from cdcwh.core.avro_block import _varint_lengths, block_schema, read_bodies
from cdcwh.core.avro_reader import compile_reader
from cdcwh.core.contract import ColumnContract, TableContract
from cdcwh.core.record import DecodedBatch, RejectReason
from tests.support.avro_fixtures import captured_avro
from tests.unit.core.test_avro import ID, comparable, encode, envelope, event
from tests.unit.core.test_avro_reader_shapes import _compound, _named, _values


def write(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), value)
    return out.getvalue()


def fastavro_reads(schemas: WriterSchemas, raw: bytes) -> Any:
    """A Confluent-framed body as fastavro reads it with its writer schema (``None`` for no body)."""
    if not raw:
        return None
    text = schemas.by_id[int.from_bytes(raw[1:5], "big")]
    assert text is not None
    return schemaless_reader(io.BytesIO(raw[5:]), parse_schema(json.loads(text)), None)


def top(schema: Any) -> dict[str, Any]:
    return {"type": "record", "name": "Top", "fields": [{"name": "v", "type": schema}]}


# ---- the block reader -----------------------------------------------------------------------------------


# Random schemas of what the block reader takes: primitives but a bare null, records of at least one field,
# arrays, and unions with null in either place.
_BLOCK_SCHEMAS = st.recursive(
    st.sampled_from(["boolean", "int", "long", "float", "double", "bytes", "string"]),
    lambda inner: _compound(inner, maps=False, min_fields=1),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_bodies_read_in_a_block_as_fastavro_reads_each(data: st.DataObject) -> None:
    schema = top(_named(data.draw(_BLOCK_SCHEMAS), itertools.count()))
    block = block_schema(schema)
    assert block is not None
    values = data.draw(st.lists(_values(schema), min_size=1, max_size=5))
    bodies = [write(schema, v) for v in values]
    read = read_bodies(block, list(bodies))
    assert read is not None
    parsed = parse_schema(schema)
    assert read.table.to_pylist() == [schemaless_reader(io.BytesIO(b), parsed, None) for b in bodies]
    assert read.alone == [ten_byte_varint(v) for v in values]


def ten_byte_varint(value: Any) -> bool:
    """Whether a value holds an integer of a 10-byte varint (|v| >= 2^62), which the block reader leaves to
    the generated reader: polars drops the bits of a tenth byte beyond the 64 of an int64."""
    if isinstance(value, dict):
        return any(map(ten_byte_varint, value.values()))
    if isinstance(value, list):
        return any(map(ten_byte_varint, value))
    return type(value) is int and not -(2**62) <= value < 2**62


def test_the_schemas_the_block_reader_leaves_to_the_generated_reader() -> None:
    enum = {"type": "enum", "name": "E", "symbols": ["A"]}
    for unsupported in (
        {"type": "map", "values": "long"},
        enum,
        {"type": "fixed", "name": "F", "size": 2},
        ["null", "long", "string"],
        "null",  # polars does not read a bare null
        {"type": "array", "items": {"type": "record", "name": "Nothing", "fields": []}},  # see below
        {"type": "array", "items": {"type": "record", "name": "Empty", "fields": []}},
    ):
        assert block_schema(top(unsupported)) is None, unsupported
    assert block_schema(top({"type": "array", "items": ["null", "long"]})) is not None
    assert block_schema(top({"type": "record", "name": "Empty", "fields": []})) is not None


def test_named_types_referred_to_are_written_out_and_properties_dropped() -> None:
    schema = envelope([ID, {"name": "n", "type": ["null", "string"], "default": None}])
    block = block_schema(schema)
    assert block is not None
    fields = {f["name"]: f["type"] for f in block.schema["fields"]}
    assert fields["after"][1]["fields"] == fields["before"][1]["fields"]  # "Value" by name, written out
    assert fields["after"][1]["name"] != fields["before"][1]["name"]
    assert "default" not in json.dumps(block.schema) and "connect.name" not in json.dumps(block.schema)
    parse_schema(block.schema)  # a valid schema: every record's name its own


def test_a_schema_that_grows_beyond_the_budget_once_written_out_is_left_to_the_generated_reader() -> None:
    """Each record holds the one before it and refers to it twice: written out, 3^12 records (nested only 12
    deep); refused at once by the size budget."""
    schema: dict[str, Any] = {"type": "record", "name": "R0", "fields": [ID]}
    for i in range(1, 13):
        prior = f"R{i - 1}"
        schema = {
            "type": "record",
            "name": f"R{i}",
            "fields": [
                {"name": "x", "type": schema},
                {"name": "y", "type": prior},
                {"name": "z", "type": prior},
            ],
        }
    assert block_schema(top(schema)) is None


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "a byte after the body"),
        (lambda b: b"\x82\x00" + b[1:], "the id's varint written one byte longer than needed"),
    ],
)
def test_a_body_whose_length_does_not_add_up_fails_the_block(edit: Any, why: str) -> None:
    schema = top({"type": "record", "name": "R", "fields": [ID, {"name": "s", "type": "string"}]})
    block = block_schema(schema)
    assert block is not None
    bodies = [write(schema, {"v": {"id": i, "s": "x" * i}}) for i in range(1, 4)]
    assert bodies[1][0] == 0x04  # id 2: one byte
    read = read_bodies(block, list(bodies))
    assert read is not None and read.alone == [False] * 3
    bodies[1] = edit(bodies[1])
    assert read_bodies(block, list(bodies)) is None, why


def test_values_polars_reads_otherwise_than_the_generated_reader_are_marked_to_read_alone() -> None:
    schema = top({"type": "record", "name": "R", "fields": [{"name": "i", "type": "int"}, ID]})
    block = block_schema(schema)
    assert block is not None
    edges = [(-(2**31), 2**62 - 1), (2**31 - 1, -(2**62)), (5, 2**62), (6, -(2**62) - 1), (7, 2**63 - 1)]
    bodies = [write(schema, {"v": {"i": i, "id": n}}) for i, n in edges]
    read = read_bodies(block, bodies)
    assert read is not None
    assert read.table.to_pylist() == [{"v": {"i": i, "id": n}} for i, n in edges]
    assert read.alone == [False, False, True, True, True]  # the longs of 10-byte varints
    # an int's longest varint is five bytes: one beyond 32 bits keeps the length (polars alone reads -2^31)
    beyond = write("long", 2**31) + write("long", 1)
    assert len(beyond) == len(write(schema, {"v": {"i": -(2**31), "id": 1}}))
    marked = read_bodies(block, [bodies[0], beyond])
    assert marked is not None and marked.alone == [False, True]
    assert marked.table.to_pylist()[1] == {"v": {"i": 2**31, "id": 1}}


def test_a_body_of_more_array_items_than_the_generated_reader_takes_is_read_alone() -> None:
    schema = top({"type": "array", "items": {"type": "array", "items": "boolean"}})
    block = block_schema(schema)
    assert block is not None
    # the limit counts every item of a body, nested ones too: 2 + 2 * 524,287 = MAX_ITEMS
    at_limit = [[True] * 524_287, [False] * 524_287]
    bodies = [write(schema, {"v": at_limit}), write(schema, {"v": [*at_limit, [True]]})]
    read = read_bodies(block, bodies)
    assert read is not None and read.alone == [False, True]
    read_alone = compile_reader(schema)  # the generated reader takes the first and refuses the second
    assert read_alone(bodies[0], 0)[1] == len(bodies[0])
    with pytest.raises(ValueError, match="beyond 1048576 items"):
        read_alone(bodies[1], 0)


def test_varint_lengths_at_every_boundary() -> None:
    import numpy as np

    edges = [0, 63, 64, 8191, 8192, -64, -65, 2**62 - 1, 2**62, 2**63 - 1, -(2**63), 1_796_402_766_733]
    got = _varint_lengths(np.array(edges, np.int64)).tolist()
    assert got == [len(write("long", v)) for v in edges]


# ---- the columnar branch of decode_batch ---------------------------------------------------------------


def schemas_of(schemas: WriterSchemas) -> dict[int, str]:
    return {i: text for i, text in schemas.by_id.items() if text is not None}


def decoded(
    records: list[RawRecord], schemas: dict[int, str], *, blocks: bool, **kwargs: Any
) -> DecodedBatch:
    """``decode_batch`` with the columnar branch taking chunks of any size, or never."""
    minimum = avro_batch.MIN_RECORDS
    setattr(avro_batch, "MIN_RECORDS", 1 if blocks else 10**9)  # noqa: B010
    try:
        return decode_batch(
            records, kwargs.pop("contracts", {}), writer_schemas=WriterSchemas(schemas), **kwargs
        )
    finally:
        setattr(avro_batch, "MIN_RECORDS", minimum)  # noqa: B010


@pytest.fixture
def given_back(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[int]]]:
    """What each chunk gave back to the record-at-a-time path."""
    calls: list[list[int]] = []
    real = avro_batch.add_chunk

    def spy(*args: Any) -> list[int]:
        rest = real(*args)
        calls.append(list(rest))
        return rest

    monkeypatch.setattr(avro_batch, "add_chunk", spy)
    yield calls


def same(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.rejected == b.rejected and a.ignored == b.ignored
    assert a.tables.keys() == b.tables.keys()
    for topic, table in a.tables.items():  # NaN != NaN: rows compared with comparable
        assert table.schema == b.tables[topic].schema
        assert comparable(table.to_pylist()) == comparable(b.tables[topic].to_pylist()), topic


def test_the_real_capture_decodes_the_same_in_blocks(given_back: list[list[int]]) -> None:
    records, schemas = captured_avro("type_zoo_avro")
    in_blocks = decoded(records, schemas_of(schemas), blocks=True)
    # its one chunk (13 values; the tombstone is not Avro) was read as a block, but for the rows holding
    # a bigint at the ends of its range (10-byte varints)
    extreme = [
        r.offset
        for r in records
        if r.value is not None
        and ten_byte_varint(fastavro_reads(schemas, r.value))
        | ten_byte_varint(fastavro_reads(schemas, r.key or b""))
    ]
    assert extreme and len(extreme) < 13
    assert given_back == [extreme]
    same(in_blocks, decoded(records, schemas_of(schemas), blocks=False))


SCHEMA = envelope([ID, {"name": "n", "type": ["null", "string"], "default": None}])
KEY = {"type": "record", "name": "Key", "namespace": "s.public.t", "fields": [ID]}


def events(count: int = 40) -> list[RawRecord]:
    out = []
    for i in range(count):
        op = "cud"[i % 3]
        payload = event({"id": i, "n": f"n{i}"}, op)
        if op == "d":
            payload["before"], payload["after"] = payload["after"], None
        key = encode(2, KEY, {"id": i})
        out.append(RawRecord("s.public.t", i % 2, i, 1_700_000_000_000 + i, key, encode(1, SCHEMA, payload)))
    return out


SCHEMAS = {1: json.dumps(SCHEMA), 2: json.dumps(KEY)}


def test_rows_are_the_same_in_blocks_and_in_input_order(given_back: list[list[int]]) -> None:
    records = events()
    in_blocks = decoded(records, SCHEMAS, blocks=True)
    assert given_back == [[]]
    same(in_blocks, decoded(records, SCHEMAS, blocks=False))
    table = in_blocks.tables["s.public.t"]
    assert table["__offset"].to_pylist() == list(range(40))
    assert table["__key"].to_pylist()[5] == {"id": 5} and table["__before"].to_pylist()[2] == {
        "id": 2,
        "n": "n2",
    }


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda r: r._replace(value=encode(1, SCHEMA, {**event({"id": 7}), "op": "x"})),
            RejectReason.UNKNOWN_OP,
        ),
        (lambda r: r._replace(value=encode(1, SCHEMA, {**event({"id": 7}), "after": None})), None),
        (lambda r: r._replace(value=(r.value or b"")[:-3]), RejectReason.INVALID_AVRO),
        (lambda r: r._replace(value=(r.value or b"") + b"\x02"), RejectReason.INVALID_AVRO),
        (lambda r: r._replace(key=(r.key or b"") + b"\x02"), RejectReason.INVALID_AVRO),
    ],
    ids=["unknown-op", "insert-without-after", "truncated", "trailing-bytes", "key-trailing-bytes"],
)
def test_a_bad_record_in_a_block_gets_the_reason_it_gets_alone(
    edit: Any, reason: RejectReason | None, given_back: list[list[int]]
) -> None:
    records = events()
    records[7] = edit(records[7])
    alone = decoded(records, SCHEMAS, blocks=False)
    given_back.clear()
    in_blocks = decoded(records, SCHEMAS, blocks=True)
    same(in_blocks, alone)
    assert [r.offset for r in in_blocks.rejected] == [7]
    assert in_blocks.rejected[0].reason == (reason or RejectReason.INVALID_ENVELOPE)
    assert in_blocks.tables["s.public.t"].num_rows == 39
    # a bad envelope costs the block its own row only; a body that does not read costs it the block
    assert given_back == ([[7]] if reason in (RejectReason.UNKNOWN_OP, None) else [list(range(40))])


def test_a_keyed_table_without_keys_is_decided_by_the_record_at_a_time_path(
    given_back: list[list[int]],
) -> None:
    records = [r._replace(key=None) for r in events()]
    contracts = {
        "s.public.t": TableContract(
            topic="s.public.t", key=("id",), columns={"id": ColumnContract(type="int64")}
        )
    }
    alone = decoded(records, SCHEMAS, blocks=False, contracts=contracts)
    given_back.clear()
    in_blocks = decoded(records, SCHEMAS, blocks=True, contracts=contracts)
    same(in_blocks, alone)
    assert {r.reason for r in in_blocks.rejected} == {RejectReason.MISSING_KEY}
    assert len(in_blocks.rejected) == 40 and given_back == [list(range(40))]


def test_two_ids_of_one_schema_read_one_at_a_time_keep_input_order() -> None:
    """Small chunks go back to the record-at-a-time path after the others: two ids with the same schema
    text share a row group, which then holds its rows out of order until the topic sorts them."""
    records = [
        r._replace(value=b"\x00" + (1 + i % 2 * 2).to_bytes(4, "big") + (r.value or b"")[5:])
        for i, r in enumerate(events(6))
    ]
    batch = decode_batch(records, {}, writer_schemas=WriterSchemas({**SCHEMAS, 3: SCHEMAS[1]}))
    assert batch.rejected == []
    assert batch.tables["s.public.t"]["__offset"].to_pylist() == list(range(6))


def test_rows_of_one_plan_read_both_ways_unify_as_one_group(given_back: list[list[int]]) -> None:
    """Two ids of one schema text share a plan: one id's rows go one at a time (a chunk below the minimum)
    and the other's as a block. Bronze must unify them as the one group they are, so that a conflicting
    schema between them is the one rejected, whichever part has good rows first."""
    wide = envelope([ID, {"name": "a", "type": "long"}, {"name": "b", "type": "long"}])
    narrow = envelope([ID, {"name": "b", "type": "string"}])
    schemas = {11: json.dumps(wide), 12: json.dumps(narrow), 13: json.dumps(wide)}
    contracts = {
        "s.public.t": TableContract(topic="s.public.t", columns={"a": ColumnContract(type="int64", max=10)})
    }
    records = [
        RawRecord("s.public.t", 0, 0, 1, None, encode(11, wide, event({"id": 0, "a": 100, "b": 0}))),
        RawRecord("s.public.t", 0, 1, 1, None, encode(12, narrow, event({"id": 1, "b": "x"}))),
    ]
    records += [
        RawRecord("s.public.t", 0, i, 1, None, encode(13, wide, event({"id": i, "a": 1, "b": i})))
        for i in range(2, 42)
    ]
    alone = decoded(records, schemas, blocks=False, contracts=contracts)
    given_back.clear()
    batch = decode_batch(records, contracts, writer_schemas=WriterSchemas(schemas))  # the default minimum
    assert given_back == [[0], [1], []]  # the chunks of ids 11 and 12 below the minimum, 13 as a block
    same(batch, alone)
    assert batch.tables["s.public.t"].num_rows == 40
    assert [(r.offset, r.reason) for r in batch.rejected] == [
        (0, RejectReason.CONTRACT_VIOLATION),
        (1, RejectReason.SCHEMA_CONFLICT),
    ]


def test_a_name_is_looked_up_in_the_enclosing_namespace_first() -> None:
    """``"after": ["null", "Value"]`` inside namespace s.public.t is s.public.t.Value, not a ``Value`` of the
    null namespace defined before it (the Avro specification; fastavro and the generated reader agree)."""
    source = envelope([])["fields"][2]["type"]
    schema = {
        "type": "record",
        "name": "Envelope",
        "namespace": "s.public.t",
        "fields": [
            {
                "name": "other",
                "type": {
                    "type": "record",
                    "name": "Value",
                    "namespace": "",
                    "fields": [{"name": "other", "type": "long"}],
                },
            },
            {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": [ID]}]},
            {"name": "after", "type": ["null", "Value"]},
            {"name": "source", "type": source},
            {"name": "op", "type": "string"},
        ],
    }
    payload = {"other": {"other": 7}, "before": None, "source": event({})["source"], "op": "c"}
    records = [
        RawRecord("s.public.t", 0, i, 1, None, encode(1, schema, {**payload, "after": {"id": i}}))
        for i in range(3)
    ]
    schemas = {1: json.dumps(schema)}
    in_blocks, alone = decoded(records, schemas, blocks=True), decoded(records, schemas, blocks=False)
    same(in_blocks, alone)
    assert in_blocks.rejected == []
    assert in_blocks.tables["s.public.t"].select(["id"]).to_pylist() == [{"id": i} for i in range(3)]
