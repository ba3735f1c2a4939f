"""The columnar branch of :func:`cdcwh.core.envelope.decode_batch` for Avro records.

The Avro records of one topic that share a value schema id and a key schema id (or have no key) form a
chunk. A chunk's bodies are read at once (:mod:`cdcwh.core.avro_block`), the envelope is checked column-wise,
and the rows are added to their topic as one group of columns, so that no per-record dict or tuple is made:
the same codecs then decode the columns as they decode the JSON path's (:mod:`cdcwh.core.builder`).

Whatever this branch does not take goes back to the caller, which decodes it one record at a time and says
why a record is bad: a chunk too small to be worth a block, a schema id the registry does not know, a schema
the block reader does not take, a block that fails to read or whose lengths do not add up, and single rows
whose envelope does not hold (an unknown ``op``, a row op without ``after``, a keyed table's row without a
key) or that the block reader marks to be read alone. So each record is decided as the record-at-a-time path
decides it, but for the two corruptions the block reader does not see (:mod:`cdcwh.core.avro_block`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.avro import HEADER_BYTES, MAGIC, WriterSchemas, block_plan
from cdcwh.core.avro_block import Block, BlockSchema, read_bodies
from cdcwh.core.builder import SOURCE_KEYS, GroupBuilder
from cdcwh.core.plan import EMPTY_PLAN, key_plan, value_plan
from cdcwh.core.record import KEYED_OPS, OPS, ROW_OPS, RawRecord
from cdcwh.core.topic import TopicBuilder

MIN_RECORDS = 32
"""Fewer records of a chunk than this are read one at a time: a block costs about as much as 20 bodies
read alone. (Not ``Final``: the tests set it to compare both paths on small inputs.)"""
_ROW_OPS: Final = pa.array(sorted(ROW_OPS))
_KEPT_BEFORE: Final = pa.array(sorted(ROW_OPS | {"d"}))
"""The ops whose before image is kept (as ``envelope._decode_record`` keeps it)."""

ChunkKey = tuple[str, bytes, bytes | None]
"""A chunk: the topic, the value's 5-byte header and the key's (``None``: no key)."""


def chunk_key(record: RawRecord, max_bytes: int) -> ChunkKey | None:
    """The chunk of an Avro record, or ``None`` for one to decode on its own (JSON, a tombstone, too large,
    no longer than a header, a key that is not Avro)."""
    value, key = record.value, record.key
    if value is None or not _avro(value, max_bytes):
        return None
    if key is None:
        return record.topic, value[:HEADER_BYTES], None
    if not _avro(key, max_bytes):
        return None
    return record.topic, value[:HEADER_BYTES], key[:HEADER_BYTES]


def _avro(raw: bytes, max_bytes: int) -> bool:
    return HEADER_BYTES < len(raw) <= max_bytes and raw[0] == MAGIC


def add_chunk(
    topic: TopicBuilder,
    records: Sequence[RawRecord],
    positions: list[int],
    chunk: ChunkKey,
    schemas: WriterSchemas,
) -> list[int]:
    """Add the chunk's records at ``positions`` to ``topic`` as one group; return the positions left for
    the record-at-a-time path (all of them when the chunk is not taken). Adds nothing unless it returns."""
    _, value_header, key_header = chunk
    if len(positions) < MIN_RECORDS:
        return positions
    value = block_plan(value_header, "value", schemas, value_plan)
    if value is None or not _is_envelope(value[1]):
        return positions
    plan, block = value
    key = None if key_header is None else block_plan(key_header, "key", schemas, key_plan)
    if key_header is not None and key is None:
        return positions
    values = read_bodies(block, [(records[p].value or b"")[HEADER_BYTES:] for p in positions])
    keys = None
    if key is not None:
        keys = read_bodies(key[1], [(records[p].key or b"")[HEADER_BYTES:] for p in positions])
    if values is None or (key is not None and keys is None):
        return positions
    table = values.table
    ops: list[str] = table.column("op").to_pylist()
    after = table.column("after").combine_chunks()
    contract = topic.contract
    keyless = contract is not None and bool(contract.key) and key is None
    alone = values.alone if keys is None else [a or b for a, b in zip(values.alone, keys.alone, strict=True)]
    good = [
        not read_alone and _holds(op, present, keyless)
        for op, present, read_alone in zip(ops, after.is_valid().to_pylist(), alone, strict=True)
    ]
    rest = [p for p, ok in zip(positions, good, strict=True) if not ok]
    if rest:
        mask = pa.array(good, pa.bool_())
        table, after = table.filter(mask), after.filter(mask)
        keys = None if keys is None else Block(keys.table.filter(mask), [False] * sum(good))
        ops = [op for op, ok in zip(ops, good, strict=True) if ok]
        positions = [p for p, ok in zip(positions, good, strict=True) if ok]
    if not positions:
        return rest
    op_array = pa.array(ops, pa.string())
    before = table.column("before").combine_chunks()
    before_kept = pc.and_(before.is_valid(), pc.is_in(op_array, value_set=_KEPT_BEFORE))
    key_columns = [] if key is None or keys is None else [_top(keys.table, n) for n in key[0].names]
    group = GroupBuilder.of_columns(
        (plan, EMPTY_PLAN if key is None else key[0]),
        positions,
        ops,
        (
            _fields(after, plan.names, pc.is_in(op_array, value_set=_ROW_OPS)),
            _fields(before.filter(before_kept), plan.names),
            [int(i) for i in pc.indices_nonzero(before_kept).to_pylist()],
        ),
        (key_columns, [key is not None] * len(positions)),
        _fields(table.column("source").combine_chunks(), SOURCE_KEYS),
        (
            [records[p].partition for p in positions],
            [records[p].offset for p in positions],
            [records[p].timestamp_ms for p in positions],
        ),
    )
    topic.add_group(group)
    return rest


def _holds(op: str, after_present: bool, keyless: bool) -> bool:
    """Whether a row's envelope holds (as ``envelope._decode_record`` checks it); rows that do not are read
    again one at a time, which rejects them with the reason."""
    if op not in OPS:
        return False
    if op in ROW_OPS and not after_present:
        return False
    return not (keyless and op in KEYED_OPS)


def _is_envelope(block: BlockSchema) -> bool:
    """A Debezium envelope as AvroData writes it: ``op`` a string, ``before`` and ``after`` optional
    records, ``source`` a record (optional or not)."""
    types = {f["name"]: f["type"] for f in block.schema["fields"]}
    if types.get("op") != "string":
        return False
    optional = [types.get("before"), types.get("after")]
    source = types.get("source")
    return all(isinstance(t, list) and any(map(_is_record, t)) for t in optional) and (
        _is_record(source) or (isinstance(source, list) and any(map(_is_record, source)))
    )


def _is_record(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "record"


def _fields(array: pa.Array, names: Sequence[str], keep: pa.Array | None = None) -> list[pa.Array]:
    """The fields ``names`` of a struct array, null where the struct is null (or ``keep`` is false); a field
    the struct lacks is all null. Arrow arrays: the codecs take most of them whole (``Codec.from_arrow``)."""
    if keep is not None:
        array = pa.StructArray.from_arrays(
            [array.field(i) for i in range(array.type.num_fields)],
            fields=list(array.type),
            mask=pc.invert(pc.and_(array.is_valid(), keep)),
        )
    children = dict(zip((f.name for f in array.type), array.flatten(), strict=True))
    return [children[name] if name in children else pa.nulls(len(array)) for name in names]


def _top(table: pa.Table, name: str) -> pa.Array:
    """A top-level field of the rows of ``table`` (a key's column), all null if the schema lacks it."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows)
    return table.column(name).combine_chunks()
