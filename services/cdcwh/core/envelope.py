"""Decode a batch of Debezium JSON records into one bronze Arrow table per topic, plus rejections.

Accepted shapes: values with the JSON converter's schema envelope (``{"schema": ..., "payload": ...}``) or
without it (the payload alone), keys likewise, tombstones (null value), and every op (r c u d t m).
Schemaless values take their types from the topic's :class:`~cdcwh.core.contract.TableContract`, or are
inferred conservatively for unknown tables. Nothing here raises for bad data: one bad record is one
:class:`~cdcwh.core.record.Rejection` and never affects the others.

Performance: the schema block is the same for every event of a table, and the JSON converter writes it first
and compactly. When the raw bytes start with ``{"schema":``, the schema part is looked up by its bytes in a
plan cache and only the payload is parsed; a miss parses the whole record once and verifies the split.

With the envelope a batch decodes at about the rate of a bare ``orjson.loads`` of each record; the measured
rates are in docs/decoding.md ("Throughput"), the decoder's share of ingest's CPU in docs/benchmarks.md
("What limits each figure").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson
import pyarrow as pa

from cdcwh.core import avro, avro_batch
from cdcwh.core.avro import NO_SCHEMAS, AvroReject, WriterSchemas
from cdcwh.core.contract import TableContract
from cdcwh.core.plan import EMPTY_PLAN, PlanCache, RowPlan, key_plan, schemaless_plan, value_plan
from cdcwh.core.record import (
    KEYED_OPS,
    OPS,
    ROW_OPS,
    DecodedBatch,
    Ignored,
    IgnoreReason,
    RawRecord,
    Rejection,
    RejectReason,
    show,
)
from cdcwh.core.topic import TopicBuilder

DEFAULT_MAX_VALUE_BYTES: Final = 1_048_576
_PREFIX: Final = b'{"schema":'
_SEPARATOR: Final = b',"payload":'
_PREFIX_LEN: Final = len(_PREFIX)
_SEPARATOR_LEN: Final = len(_SEPARATOR)
_VALUE_PLANS: Final = PlanCache()
_KEY_PLANS: Final = PlanCache()


class _Reject(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode_batch(
    records: Sequence[RawRecord],
    contracts: Mapping[str, TableContract],
    *,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    schemas: Mapping[str, pa.Schema] | None = None,
    writer_schemas: WriterSchemas = NO_SCHEMAS,
) -> DecodedBatch:
    """Decode ``records`` (any mix of topics) into bronze tables keyed by topic and a list of rejections.

    ``contracts`` are keyed by topic. Keys or values longer than ``max_value_bytes`` are rejected unread.
    ``schemas`` are the current schemas of the topics' bronze tables, when they exist: a schema in the batch
    that cannot be unified with its table's is rejected (``schema_conflict``), so that it is never the
    batch's first schema that decides which of two conflicting schemas is rejected.
    ``writer_schemas`` are the Avro writer schemas of the batch's schema ids (records in the Confluent wire
    format, detected per record: :mod:`cdcwh.core.avro`), fetched by the caller.
    Tables hold the good rows in input order; rejections are in input order too.
    """
    existing = schemas or {}
    topics: dict[str, TopicBuilder] = {}
    rejected: list[tuple[int, RejectReason, str]] = []
    ignored: list[Ignored] = []
    chunks: dict[avro_batch.ChunkKey, list[int]] = {}

    def one(position: int) -> None:
        record = records[position]
        try:
            skip = _decode_record(position, record, topics[record.topic], max_value_bytes, writer_schemas)
            if skip is not None:
                ignored.append(Ignored(record.topic, record.partition, record.offset, skip))
        except (_Reject, AvroReject) as exc:
            rejected.append((position, exc.reason, exc.detail))
        except Exception as exc:  # a decoder bug must cost one record, not the batch
            rejected.append((position, RejectReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))

    for position, record in enumerate(records):
        if record.topic not in topics:
            topics[record.topic] = TopicBuilder(
                record.topic, contracts.get(record.topic), existing.get(record.topic)
            )
        chunk = avro_batch.chunk_key(record, max_value_bytes) if writer_schemas.by_id else None
        if chunk is not None:  # Avro: read with the others of its schema ids, below
            chunks.setdefault(chunk, []).append(position)
        else:
            one(position)
    for chunk, positions in chunks.items():
        try:
            rest = avro_batch.add_chunk(topics[chunk[0]], records, positions, chunk, writer_schemas)
        except Exception:  # noqa: BLE001 - a bug of the columnar branch: each record is read on its own
            rest = positions
        for position in rest:
            one(position)
    batch = DecodedBatch(ignored=ignored)
    for topic, builder in topics.items():
        try:
            table, topic_rejected = builder.finish()
        except Exception as exc:  # same: quarantine the topic's rows, keep the other topics
            detail = f"{type(exc).__name__} while building the table: {exc}"
            positions = [p for group in builder.groups.values() for p in group.positions]
            table, topic_rejected = None, [(p, RejectReason.INTERNAL_ERROR, detail) for p in positions]
        if table is not None:
            batch.tables[topic] = table
        rejected.extend(topic_rejected)
    rejected.sort(key=lambda item: item[0])
    batch.rejected = [Rejection.of(records[p], reason, detail) for p, reason, detail in rejected]
    return batch


def _decode_record(
    position: int, record: RawRecord, topic: TopicBuilder, max_bytes: int, avro_schemas: WriterSchemas
) -> IgnoreReason | None:
    """Add the record's row to its topic, raise ``_Reject``, or return why the record is skipped."""
    contract = topic.contract
    keyed = contract is not None and bool(contract.key)
    coordinates = (record.partition, record.offset, record.timestamp_ms)
    if record.value is None:
        if record.key is None and not keyed:
            # a table without a primary key under REPLICA IDENTITY FULL: Debezium follows each delete with a
            # tombstone whose key and value are both null. It says nothing the delete did not, and compaction
            # has no key to act on: skip it (a keyed contract still rejects it as missing_key)
            return IgnoreReason.KEYLESS_TOMBSTONE
        plan, key = _decode_key(record, topic, max_bytes, avro_schemas, required=True)
        topic.group(EMPTY_PLAN, plan).add(position, coordinates, "tombstone", (None, None), None, key)
        return None
    if len(record.value) > max_bytes:
        raise _Reject(RejectReason.TOO_LARGE, f"value is {len(record.value)} bytes, max {max_bytes}")
    plan_or_none, payload = _parse(record.value, "value", topic.memo, _VALUE_PLANS, value_plan, avro_schemas)
    if not isinstance(payload, dict):
        raise _Reject(RejectReason.INVALID_ENVELOPE, f"payload is not an object: {show(payload)}")
    op = payload.get("op")
    if op is None:
        raise _Reject(RejectReason.INVALID_ENVELOPE, "envelope without op (or without payload)")
    if type(op) is not str or op not in OPS:
        raise _Reject(RejectReason.UNKNOWN_OP, f"unknown op {show(op)}")
    after, before, source = payload.get("after"), payload.get("before"), payload.get("source")
    if (
        (after is not None and type(after) is not dict)
        or (before is not None and type(before) is not dict)
        or (source is not None and type(source) is not dict)
    ):
        parts = (("after", after), ("before", before), ("source", source))
        name, part = next((n, p) for n, p in parts if p is not None and type(p) is not dict)
        raise _Reject(RejectReason.INVALID_ENVELOPE, f"{name} is not an object: {show(part)}")
    if op in ROW_OPS:
        if after is None:
            raise _Reject(RejectReason.INVALID_ENVELOPE, f"op {op!r} without an after image")
    else:
        after = None
        if op != "d":
            before = None
    # truncates and logical decoding messages concern no row: Debezium sends them without a key
    kplan, key = _decode_key(record, topic, max_bytes, avro_schemas, required=keyed and op in KEYED_OPS)
    if plan_or_none is None:
        plan = _schemaless_value_plan(topic, after, before)
    else:
        plan = plan_or_none
    if plan.error is not None:
        raise _Reject(RejectReason.INVALID_ENVELOPE, plan.error)
    topic.group(plan, kplan).add(position, coordinates, op, (after, before), source, key)
    return None


def _decode_key(
    record: RawRecord, topic: TopicBuilder, max_bytes: int, avro_schemas: WriterSchemas, *, required: bool
) -> tuple[RowPlan, dict[str, Any] | None]:
    if record.key is None:
        if required:
            what = "a tombstone" if record.value is None else "a record of a keyed table"
            raise _Reject(RejectReason.MISSING_KEY, f"{what} has no key")
        return EMPTY_PLAN, None
    if len(record.key) > max_bytes:
        raise _Reject(RejectReason.TOO_LARGE, f"key is {len(record.key)} bytes, max {max_bytes}")
    plan, payload = _parse(record.key, "key", topic.memo, _KEY_PLANS, key_plan, avro_schemas)
    if payload is None:
        if required:
            raise _Reject(RejectReason.MISSING_KEY, "the key is null")
        return EMPTY_PLAN, None
    if type(payload) is not dict:
        raise _Reject(RejectReason.INVALID_ENVELOPE, f"key is not an object: {show(payload)}")
    if plan is None:
        names = tuple(payload)
        plan = topic.schemaless.get((True, names))
        if plan is None:
            contract = topic.contract
            known = {} if contract is None else contract.field_codecs()
            plan = schemaless_plan(
                names, {k: known[k] for k in (contract.key if contract else ()) if k in known}
            )
            topic.schemaless[(True, names)] = plan
    if plan.error is not None:
        raise _Reject(RejectReason.INVALID_ENVELOPE, plan.error)
    return plan, payload


def _schemaless_value_plan(
    topic: TopicBuilder, after: dict[str, Any] | None, before: dict[str, Any] | None
) -> RowPlan:
    names = tuple(after) if after is not None else ()
    if before is not None and (after is None or before.keys() != after.keys()):
        seen = set(names)
        names += tuple(k for k in before if k not in seen)
    plan = topic.schemaless.get((False, names))
    if plan is None:
        known = {} if topic.contract is None else topic.contract.field_codecs()
        plan = topic.schemaless[(False, names)] = schemaless_plan(names, known)
    return plan


def _parse(
    raw: bytes,
    what: str,
    memo: dict[str, tuple[bytes, RowPlan]],
    cache: PlanCache,
    build: Callable[[Any], RowPlan],
    avro_schemas: WriterSchemas,
) -> tuple[RowPlan | None, Any]:
    """``(plan, payload)`` of an enveloped document, or ``(None, document)`` of a schemaless one.

    An Avro record (magic byte 0) is decoded by :func:`cdcwh.core.avro.decode`; other binary data (a wrong
    magic byte) is ``invalid_avro`` rather than ``invalid_json`` when a registry is configured (Avro is
    expected); without one it is ``invalid_json``, as in a JSON-only deployment (docs/decoding.md).

    ``memo[what]`` is the topic's last verified envelope head ``{"schema":S,"payload":`` and its plan: when
    the record starts with it, only the payload is parsed. This is sound because ``S`` in the memo is a
    complete JSON value: ``{"schema":S,"payload":P}`` with a valid ``S`` and a ``P`` that parses is exactly
    the envelope ``{schema: S, payload: P}``.
    """
    if raw[:1] < b" ":  # not "{": Avro, binary, or JSON after leading whitespace
        if avro.is_avro(raw):
            return avro.decode(raw, what, avro_schemas, build)
        if avro.is_binary(raw) and avro_schemas.unavailable is None:
            raise _Reject(
                RejectReason.INVALID_AVRO,
                f"{what} starts with byte 0x{raw[0]:02x}: binary but not the Confluent wire format"
                " (magic byte 0)",
            )
    last = memo.get(what)
    if last is not None:
        head, memo_plan = last
        if raw.startswith(head) and raw.endswith(b"}"):
            return memo_plan, _loads(memoryview(raw)[len(head) : -1], what)
    split = _split(raw)
    if split is not None:
        cached = cache.get(split[0])
        if cached is not None:
            memo[what] = (_PREFIX + split[0] + _SEPARATOR, cached)
            return cached, _loads(split[1], what)
    document = _loads(raw, what)
    if not (
        isinstance(document, dict) and len(document) == 2 and "schema" in document and "payload" in document
    ):
        return None, document
    schema, payload = document["schema"], document["payload"]
    if schema is None:
        return None, payload
    verified = split is not None and _same_json(split[0], schema)
    raw_schema = split[0] if split is not None and verified else orjson.dumps(schema)
    plan = cache.get(raw_schema) or build(schema)
    cache.put(raw_schema, plan)
    if verified:
        memo[what] = (_PREFIX + raw_schema + _SEPARATOR, plan)
    return plan, payload


def _split(raw: bytes) -> tuple[bytes, memoryview] | None:
    """Split ``{"schema":S,"payload":P}`` at the first separator; callers verify ``S`` before trusting it."""
    if not raw.startswith(_PREFIX) or not raw.endswith(b"}"):
        return None
    at = raw.find(_SEPARATOR, _PREFIX_LEN)
    if at < 0:
        return None
    return raw[_PREFIX_LEN:at], memoryview(raw)[at + _SEPARATOR_LEN : -1]


def _same_json(raw: bytes, value: Any) -> bool:
    try:
        return bool(orjson.loads(raw) == value)
    except orjson.JSONDecodeError:
        return False


def _loads(raw: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Reject(RejectReason.INVALID_JSON, f"{what} is not valid JSON: {exc}") from None


def clear_plan_caches() -> None:
    """Forget every cached schema plan (tests; a long-running process never needs to)."""
    _VALUE_PLANS.clear()
    _KEY_PLANS.clear()
