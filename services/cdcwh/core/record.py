"""The records that enter and leave the decoder: raw Kafka records in, Arrow tables and rejections out.

Bad records are data, not exceptions: :func:`cdcwh.core.envelope.decode_batch` returns every record it
could not land as a :class:`Rejection` carrying the original bytes, the Kafka coordinates and a
:class:`RejectReason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

import pyarrow as pa

DETAIL_MAX_CHARS: Final = 500
"""Rejection details are truncated to this many characters (they end up in logs and quarantine rows)."""

VALUE_REPR_MAX_CHARS: Final = 120
"""A value quoted inside a detail is truncated to this many characters."""

OPS: Final = frozenset({"r", "c", "u", "d", "t", "m"})
"""Debezium's ops: read (snapshot), create, update, delete, truncate, message."""
ROW_OPS: Final = frozenset({"r", "c", "u"})
"""The ops that carry an after image."""
KEYED_OPS: Final = frozenset({"r", "c", "u", "d"})
"""The ops a keyed table's record must have a key for (truncates and messages concern no row)."""


class RawRecord(NamedTuple):
    """One Kafka record as consumed: coordinates plus the undecoded key and value bytes.

    A named tuple: the ingest service makes one per consumed record, and a tuple is built about three times
    faster than a frozen dataclass."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


class RejectReason(StrEnum):
    """Why a record was quarantined. A small, closed set: it is a Prometheus label."""

    TOO_LARGE = "too_large"
    """The key or value is larger than ``max_value_bytes``."""
    INVALID_JSON = "invalid_json"
    """The key or value is not JSON: bad syntax, not UTF-8, or nested deeper than the parser allows."""
    INVALID_ENVELOPE = "invalid_envelope"
    """Not a Debezium envelope: no ``op``/``payload``, ``after`` missing for c/r/u, a part of the wrong shape,
    or a ``schema`` block that cannot be mapped to Arrow."""
    INVALID_AVRO = "invalid_avro"
    """The key or value is binary but not a decodable Confluent Avro record: a wrong magic byte, shorter
    than the 5-byte header, a body that does not decode with its writer schema, or trailing bytes."""
    UNKNOWN_SCHEMA = "unknown_schema"
    """An Avro key or value whose schema id the schema registry does not know (or no registry is set)."""
    UNKNOWN_OP = "unknown_op"
    """``op`` is not one of r c u d t m."""
    MISSING_KEY = "missing_key"
    """A keyed table (contract ``key`` or a key schema) got a record without a key or with a null key field,
    or a tombstone arrived without a key."""
    TYPE_MISMATCH = "type_mismatch"
    """A value does not fit its declared type (wrong JSON type, bad base64, decimal overflow, bad timestamp,
    null in a non-optional field)."""
    CONTRACT_VIOLATION = "contract_violation"
    """A rule of the table contract in ``schemas/contracts`` failed: not-null, accepted values or a range."""
    SCHEMA_CONFLICT = "schema_conflict"
    """The record's schema cannot be unified with an earlier schema of the same topic in the batch."""
    INTERNAL_ERROR = "internal_error"
    """A bug in the decoder; the record is quarantined rather than crashing the batch."""
    UNWRITABLE = "unwritable"
    """The record decoded, but writing its row to the bronze table failed (Arrow conversion, Parquet
    statistics, the Iceberg schema): the batch was narrowed down to it and the rest landed."""


class IgnoreReason(StrEnum):
    """Why a record was skipped without being landed or quarantined: it carries nothing to keep. A closed set
    (a Prometheus label)."""

    KEYLESS_TOMBSTONE = "keyless_tombstone"
    """Null key and null value on a topic whose contract declares no key: the tombstone Debezium sends after a
    delete from a table without a primary key (REPLICA IDENTITY FULL). The delete itself is landed."""


class Ignored(NamedTuple):
    """A record skipped by design (``IgnoreReason``): counted, never landed or quarantined."""

    topic: str
    partition: int
    offset: int
    reason: IgnoreReason


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that could not be landed, with everything needed to quarantine and later replay it."""

    topic: str
    partition: int
    offset: int
    reason: RejectReason
    detail: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None

    @classmethod
    def of(cls, record: RawRecord, reason: RejectReason, detail: str) -> Rejection:
        """Build a rejection for ``record``; ``detail`` is truncated to :data:`DETAIL_MAX_CHARS`."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            detail=truncate(detail, DETAIL_MAX_CHARS),
            key=record.key,
            value=record.value,
            timestamp_ms=record.timestamp_ms,
        )


@dataclass(slots=True)
class DecodedBatch:
    """The result of decoding a batch: good rows per topic and the rejected records.

    ``tables`` maps a topic to an Arrow table of its good rows in input order (which is offset order within
    each partition); a topic whose records were all rejected has no entry. ``rejected`` is in input order.
    ``ignored`` lists the records skipped because they carry nothing (a keyless table's tombstones).
    """

    tables: dict[str, pa.Table] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        """Number of good rows over all topics."""
        return sum(table.num_rows for table in self.tables.values())


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(value: Any) -> str:
    """A short, printable rendering of a JSON value for a rejection detail."""
    return truncate(repr(value), VALUE_REPR_MAX_CHARS)
