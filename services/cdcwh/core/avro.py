"""Avro records in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro body.

Kafka Connect's ``AvroConverter`` writes each Connect schema as an Avro schema (``io.confluent.connect.avro
.AvroData``): structs become records, optional fields ``["null", X]`` unions, and the Connect name, type and
parameters ride along as the ``connect.name``, ``connect.type`` and ``connect.parameters`` properties. This
module maps such a writer schema back to the Connect schema the JSON converter would have sent, so that the
JSON path's row plans and codecs decode Avro exactly as they decode JSON, and reads the body (a reader
generated per schema, :mod:`cdcwh.core.avro_reader`; fastavro validates the schema) **without** Avro logical
types: a ``Date`` stays its day count, a ``Decimal`` its unscaled bytes, a ``Timestamp`` its epoch
milliseconds, which are the wire values the codecs expect (bytes arrive as bytes rather than base64 text;
:func:`cdcwh.core.codec.decode_base64` accepts both).

Pure: the writer schemas are looked up by the caller (ingest asks the registry, ``cdcwh.schema_registry``)
and passed in by id. A schema is parsed and planned once per schema text (a bounded cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from fastavro import parse_schema

from cdcwh.core.avro_block import BlockSchema, block_schema
from cdcwh.core.avro_reader import Reader, compile_reader
from cdcwh.core.builder import SOURCE_KEYS
from cdcwh.core.plan import RowPlan
from cdcwh.core.record import RawRecord, RejectReason

MAGIC: Final = 0
HEADER_BYTES: Final = 5
_MAGIC_BYTE: Final = b"\x00"
_JSON_WHITESPACE: Final = frozenset(b" \t\r\n")
_PRIMITIVE: Final = {
    "boolean": "boolean",
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "string",
    "bytes": "bytes",
}
_CACHE_MAX: Final = 1024


class AvroReject(Exception):  # noqa: N818 - control flow: the decoder turns it into a rejection
    """A record that cannot be decoded as Avro; ``reason`` is the rejection reason."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class WriterSchemas:
    """The writer schemas (Avro schema JSON text) of a batch's schema ids, as the registry returned them.

    ``by_id[i]`` is ``None`` when the registry does not know id ``i``; ``unavailable`` explains why no id can
    be looked up at all (no registry configured)."""

    by_id: Mapping[int, str | None] = field(default_factory=dict)
    unavailable: str | None = None
    ready: dict[bytes, tuple[Reader, dict[str, RowPlan]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """A fast path, filled by :func:`decode`: the reader and the plans of a 5-byte header already decoded.
    It belongs to this instance (one batch's schemas): ``dataclasses.replace`` gives a new, empty one, so a
    copy with other schemas never reads with these readers."""


NO_SCHEMAS: Final = WriterSchemas(unavailable="no schema registry is configured")


def is_avro(raw: bytes) -> bool:
    """Whether ``raw`` is meant as the Confluent wire format (it starts with the magic byte 0)."""
    return raw[:1] == _MAGIC_BYTE


def is_binary(raw: bytes) -> bool:
    """Whether ``raw`` starts with a control byte no JSON document starts with: binary data with a wrong
    magic byte (an Avro or Protobuf producer of another framing), rather than malformed JSON."""
    return bool(raw) and raw[0] < 0x20 and raw[0] not in _JSON_WHITESPACE


def schema_ids(records: Iterable[RawRecord]) -> set[int]:
    """The schema ids the Avro keys and values of ``records`` refer to (what to fetch before decoding)."""
    ids: set[int] = set()
    for record in records:
        for raw in (record.key, record.value):
            if raw is not None and len(raw) >= HEADER_BYTES and raw[0] == MAGIC:
                ids.add(int.from_bytes(raw[1:HEADER_BYTES], "big"))
    return ids


@dataclass(slots=True)
class _Compiled:
    read: Reader | None
    connect: Any
    error: str | None
    document: Any = None
    block: BlockSchema | None | bool = False
    """The block reader's schema, made on first use (``False``: not yet; ``None``: not supported)."""
    plans: dict[str, RowPlan] = field(default_factory=dict)


_COMPILED: dict[str, _Compiled] = {}


def decode(
    raw: bytes, what: str, schemas: WriterSchemas, build: Callable[[Any], RowPlan]
) -> tuple[RowPlan, Any]:
    """``(plan, payload)`` of one Avro key or value: the payload as the JSON path's parsed payload would be.

    Raises :class:`AvroReject`: ``invalid_avro`` (shorter than the header, a body that does not decode with
    its writer schema, trailing bytes), ``unknown_schema`` (the registry does not know the id)."""
    ready = schemas.ready.get(raw[:HEADER_BYTES])
    if ready is not None:
        read, plans = ready
        known = plans.get(what)
        if known is not None:
            try:
                payload, end = read(raw, HEADER_BYTES)
            except Exception:  # noqa: BLE001 - the full path below reads it again and says why
                end = -1
            if end == len(raw):
                return known, payload
    if len(raw) < HEADER_BYTES:
        raise AvroReject(
            RejectReason.INVALID_AVRO,
            f"{what} is {len(raw)} bytes: too short for the Confluent wire format (magic byte 0, 4-byte id)",
        )
    schema_id = int.from_bytes(raw[1:HEADER_BYTES], "big")
    text = schemas.by_id.get(schema_id)
    if text is None:
        why = schemas.unavailable or "the schema registry does not know it"
        raise AvroReject(RejectReason.UNKNOWN_SCHEMA, f"{what} schema id {schema_id}: {why}")
    compiled = _compile(text)
    if compiled.error is not None:
        raise AvroReject(RejectReason.INVALID_ENVELOPE, f"{what} schema id {schema_id}: {compiled.error}")
    plan = compiled.plans.get(what)
    if plan is None:
        plan = compiled.plans[what] = build(compiled.connect)
    assert compiled.read is not None  # noqa: S101 - set whenever error is None
    try:
        payload, end = compiled.read(raw, HEADER_BYTES)
    except Exception as exc:  # IndexError/struct.error: truncated; ValueError/UnicodeError: garbage
        end, payload = -1, f"{type(exc).__name__}: {exc}"
    if end == len(raw):
        schemas.ready[raw[:HEADER_BYTES]] = (compiled.read, compiled.plans)
        return plan, payload
    if end > len(raw) or end < 0:
        detail = payload if end < 0 else "truncated"
        raise AvroReject(
            RejectReason.INVALID_AVRO, f"{what} body does not decode with schema id {schema_id} ({detail})"
        )
    raise AvroReject(
        RejectReason.INVALID_AVRO,
        f"{what} has {len(raw) - end} bytes after the Avro body of schema id {schema_id}",
    )


def block_plan(
    header: bytes, what: str, schemas: WriterSchemas, build: Callable[[Any], RowPlan]
) -> tuple[RowPlan, BlockSchema] | None:
    """The row plan and the block schema (:mod:`cdcwh.core.avro_block`) of the writer schema a 5-byte
    header names, or ``None`` when its bodies are to be read one at a time (an unknown id, a schema that
    cannot be used or planned, or one the block reader does not take): :func:`decode` then says why."""
    text = schemas.by_id.get(int.from_bytes(header[1:HEADER_BYTES], "big"))
    if text is None:
        return None
    compiled = _compile(text)
    if compiled.error is not None:
        return None
    if compiled.block is False:
        try:
            compiled.block = block_schema(compiled.document)
        except Exception:  # noqa: BLE001 - say MemoryError: the bodies are read one at a time
            compiled.block = None
    if not isinstance(compiled.block, BlockSchema):
        return None
    plan = compiled.plans.get(what)
    if plan is None:
        plan = compiled.plans[what] = build(compiled.connect)
    return (plan, compiled.block) if plan.error is None else None


def _compile(text: str) -> _Compiled:
    compiled = _COMPILED.get(text)
    if compiled is not None:
        return compiled
    try:
        document = orjson.loads(text)
        connect = to_connect(document)
        parse_schema(document)  # fastavro validates the writer schema
        compiled = _Compiled(compile_reader(document, _projection(document)), connect, None, document)
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
        compiled = _Compiled(None, None, f"the writer schema cannot be used: {exc}")
    except Exception as exc:  # fastavro's SchemaParseException and friends
        compiled = _Compiled(None, None, f"the writer schema cannot be parsed: {type(exc).__name__}: {exc}")
    if len(_COMPILED) >= _CACHE_MAX:
        _COMPILED.clear()
    _COMPILED[text] = compiled
    return compiled


ENVELOPE_FIELDS: Final = frozenset({"before", "after", "source", "op"})
SOURCE_FIELDS: Final = frozenset(SOURCE_KEYS)


def _projection(document: Any) -> dict[str, frozenset[str]]:
    """What the decoder reads of a Debezium envelope: ``before``, ``after``, ``source`` (the fields bronze
    keeps) and ``op``; the rest (``transaction``, ``ts_us``, ``source.sequence``, ...) is read past. Nothing
    for any other schema (a key)."""
    if not isinstance(document, dict) or document.get("type") != "record":
        return {}
    fields = {f.get("name"): f.get("type") for f in document.get("fields", []) if isinstance(f, dict)}
    if "op" not in fields:
        return {}
    keep = {_fullname(document, ""): ENVELOPE_FIELDS}
    source = fields.get("source")
    if isinstance(source, list):
        source = next((s for s in source if s != "null"), None)
    if isinstance(source, dict) and source.get("type") == "record":
        keep[_fullname(source, _fullname(document, "").rpartition(".")[0])] = SOURCE_FIELDS
    return keep


def _fullname(schema: Mapping[str, Any], namespace: str) -> str:
    name = str(schema.get("name"))
    space = schema.get("namespace", namespace)
    return name if "." in name or not space else f"{space}.{name}"


def clear_cache() -> None:
    """Forget every compiled writer schema (tests)."""
    _COMPILED.clear()


def to_connect(schema: Any) -> dict[str, Any]:
    """The Connect schema (as the JSON converter writes it) of an Avro schema written by ``AvroData``."""
    return _Converter().convert(schema, "", optional=False)


class _Converter:
    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}

    def convert(self, schema: Any, namespace: str, *, optional: bool) -> dict[str, Any]:
        if isinstance(schema, list):
            branches = [s for s in schema if s != "null"]
            if len(branches) != 1 or len(schema) != 2:
                raise ValueError(f"unions other than [null, X] are not supported: {schema!r}")
            return self.convert(branches[0], namespace, optional=True)
        if isinstance(schema, str):
            if schema in _PRIMITIVE:
                return {"type": _PRIMITIVE[schema], "optional": optional}
            qualified = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            named = self.named.get(qualified) or self.named.get(schema)  # the enclosing namespace first
            if named is None:
                raise ValueError(f"unknown type {schema!r}")
            return {**named, "optional": optional}
        if not isinstance(schema, dict):
            raise ValueError(f"not an Avro schema: {schema!r}")
        kind = schema.get("type")
        out: dict[str, Any]
        if kind == "record":
            name = str(schema["name"])
            space = str(schema.get("namespace", namespace)) if "." not in name else name.rsplit(".", 1)[0]
            fullname = name if "." in name or not space else f"{space}.{name}"
            fields = [
                {**self.convert(f["type"], space, optional=False), "field": str(f["name"])}
                for f in schema["fields"]
            ]
            out = {"type": "struct", "fields": fields, "name": schema.get("connect.name", fullname)}
            self.named[fullname] = out
        elif kind == "array":
            out = {"type": "array", "items": self.convert(schema["items"], namespace, optional=False)}
        elif kind == "map":
            values = self.convert(schema["values"], namespace, optional=False)
            out = {"type": "map", "keys": {"type": "string", "optional": False}, "values": values}
        elif kind in ("enum", "fixed"):
            out = {"type": "string" if kind == "enum" else "bytes"}
            self.named[self._fullname(schema, namespace)] = out
        elif kind in _PRIMITIVE:
            out = {"type": schema.get("connect.type", _PRIMITIVE[kind])}
        else:
            return self.convert(kind, namespace, optional=optional)  # {"type": "string"} and {"type": [..]}
        if "connect.name" in schema:
            out["name"] = schema["connect.name"]
        if "connect.parameters" in schema:
            out["parameters"] = schema["connect.parameters"]
        out["optional"] = optional
        return out

    @staticmethod
    def _fullname(schema: Mapping[str, Any], namespace: str) -> str:
        name = str(schema["name"])
        space = schema.get("namespace", namespace)
        return name if "." in name or not space else f"{space}.{name}"
