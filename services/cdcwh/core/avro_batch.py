"""The columnar branch of :func:`cdcwh.core.envelope.decode_batch` for Avro records.

The Avro records of one topic that share a value schema id and a key schema id (or have no key) form a
chunk. A chunk's bodies are read at once (:mod:`cdcwh.core.avro_block`), the envelope is checked column-wise,
and the rows are added to their topic as one group of columns, so that no per-record dict or tuple is made:
the same codecs then decode the columns as they decode the JSON path's (:mod:`cdcwh.core.builder`).

Whatever this branch does not take goes back to the caller, which decodes it one record at a time and says
why a record is bad: a chunk too small to be worth a block, a schema id the registry does not know, a schema
the block reader does not take, a block that fails to read or whose lengths do not add up, and single rows
whose envelope does not hold (an unknown ``op``, a row op without ``after``, a keyed table's row without
a key). So each record is decided exactly as the record-at-a-time path decides it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.core.avro import HEADER_BYTES, MAGIC, WriterSchemas, block_plan
from cdcwh.core.avro_block import BlockSchema, read_bodies
from cdcwh.core.builder import SOURCE_KEYS, GroupBuilder
from cdcwh.core.plan import EMPTY_PLAN, RowPlan, key_plan, value_plan
from cdcwh.core.record import RawRecord
from cdcwh.core.topic import TopicBuilder

MIN_RECORDS: Final = 32
"""Fewer records of a chunk than this are read one at a time: a block costs about as much as 20 bodies
read alone."""
OPS: Final = frozenset({"r", "c", "u", "d", "t", "m"})
ROW_OPS: Final = frozenset({"r", "c", "u"})
KEYED_OPS: Final = frozenset({"r", "c", "u", "d"})

ChunkKey = tuple[str, bytes, bytes | None]
"""A chunk: the topic, the value's 5-byte header and the key's (``None``: no key)."""


def chunk_key(record: RawRecord, max_bytes: int) -> ChunkKey | None:
    """The chunk of an Avro record, or ``None`` for one to decode on its own (JSON, a tombstone, too large,
    shorter than a header, a JSON key)."""
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
    key: tuple[RowPlan, BlockSchema] | None = None
    if key_header is not None:
        key = block_plan(key_header, "key", schemas, key_plan)
        if key is None:
            return positions
    table = read_bodies(value[1], [memoryview(records[p].value or b"")[HEADER_BYTES:] for p in positions])
    if table is None:
        return positions
    keys = None
    if key is not None:
        keys = read_bodies(key[1], [memoryview(records[p].key or b"")[HEADER_BYTES:] for p in positions])
        if keys is None:
            return positions
    ops: list[Any] = table.column("op").to_pylist()
    after = table.column("after").combine_chunks()
    contract = topic.contract
    keyed = contract is not None and bool(contract.key) and key is None
    good = [_holds(op, present, keyed) for op, present in zip(ops, after.is_valid().to_pylist(), strict=True)]
    rest = [p for p, ok in zip(positions, good, strict=True) if not ok]
    if rest:
        mask = pa.array(good, pa.bool_())
        table, after = table.filter(mask), after.filter(mask)
        keys = None if keys is None else keys.filter(mask)
        ops = [op for op, ok in zip(ops, good, strict=True) if ok]
        positions = [p for p, ok in zip(positions, good, strict=True) if ok]
    if not positions:
        return rest
    value_names = value[0].names
    row_op = pc.is_in(pa.array(ops, pa.string()), value_set=pa.array(sorted(ROW_OPS)))
    after_columns = _columns(after, row_op, value_names)
    # before images are kept on row ops and deletes (as envelope._decode_record keeps them)
    kept = pc.or_(row_op, pc.equal(pa.array(ops, pa.string()), "d"))
    before = table.column("before").combine_chunks()
    before_on = pc.and_(before.is_valid(), kept)
    before_at = [int(i) for i in pc.indices_nonzero(before_on).to_pylist()]
    before_columns = _columns(before.filter(before_on), None, value_names)
    source = table.column("source").combine_chunks()
    source_columns = _columns(source, None, SOURCE_KEYS) if pa.types.is_struct(source.type) else None
    if source_columns is None:
        return rest + positions  # not an envelope after all
    key_names = key[0].names if key is not None else ()
    key_columns = [] if keys is None else [_column(keys, name) for name in key_names]
    group = GroupBuilder.of_columns(
        (value[0], EMPTY_PLAN if key is None else key[0]),
        positions,
        ops,
        (after_columns, before_columns, before_at),
        (key_columns, [key is not None] * len(positions)),
        source_columns,
        (
            [records[p].partition for p in positions],
            [records[p].offset for p in positions],
            [records[p].timestamp_ms for p in positions],
        ),
    )
    topic.add_group(group)
    return rest


def _holds(op: Any, after_present: bool, keyed_without_key: bool) -> bool:
    """Whether a row's envelope holds (as ``envelope._decode_record`` checks it); rows that do not are read
    again one at a time, which rejects them with the reason."""
    if op not in OPS:
        return False
    if op in ROW_OPS and not after_present:
        return False
    return not (keyed_without_key and op in KEYED_OPS)


def _is_envelope(block: BlockSchema) -> bool:
    """A Debezium envelope as AvroData writes it: ``op`` a string, ``before`` and ``after`` optional
    records, ``source`` a record (optional or not)."""
    types: Mapping[str, Any] = {f["name"]: f["type"] for f in block.schema["fields"]}
    if types.get("op") != "string":
        return False
    for name in ("before", "after"):
        branches = types.get(name)
        if not (isinstance(branches, list) and any(_is_record(b) for b in branches)):
            return False
    source = types.get("source")
    return _is_record(source) or (isinstance(source, list) and any(_is_record(b) for b in source))


def _is_record(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "record"


def _columns(array: pa.Array, keep: pa.Array | None, names: Sequence[str]) -> list[list[Any]]:
    """The fields ``names`` of a struct array as lists of Python values, null where the struct is null (or
    ``keep`` is false); a field the struct lacks is all null."""
    if keep is not None:
        array = pa.StructArray.from_arrays(
            [array.field(i) for i in range(array.type.num_fields)],
            fields=list(array.type),
            mask=pc.invert(pc.and_(array.is_valid(), keep)),
        )
    children = dict(zip((f.name for f in array.type), array.flatten(), strict=True))
    nulls: list[Any] = [None] * len(array)
    return [children[name].to_pylist() if name in children else list(nulls) for name in names]


def _column(table: pa.Table, name: str) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    values: list[Any] = table.column(name).to_pylist()
    return values
