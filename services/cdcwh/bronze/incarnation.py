"""Which incarnation of a partition's log a batch comes from, so that a reset log is landed, never skipped.

Landed offsets (``offsets.py``) only say "everything up to offset N of topic/partition is in bronze". They are
right as long as the log behind topic/partition is the one they were taken from. A memory-only broker that
restarted, a topic deleted and re-created, or a deployment moved to a new cluster starts the log again at 0,
and its records would then be skipped as already landed: silent loss.

So bronze also keeps, per partition, a **log mark** (snapshot summary property ``cdcwh.log-marks``, written
in the same commit as the landed offsets)::

    {"<topic>/<partition>": [epoch, base, ref_offset, fingerprint]}

- ``epoch``: the incarnation's number, 0 for the first log bronze saw;
- ``base``: what is added to the Kafka offsets of this incarnation to give bronze's ``__offset`` (0 for the
  first incarnation; for a later one, one above the highest ``__offset`` landed before it), so that
  ``__offset`` only ever grows across incarnations and the transform's watermarks and ordering keep working;
- ``ref_offset`` and ``fingerprint``: the Kafka offset of one record of this incarnation (the newest consumed)
  and a hash of its key, value and timestamp.

When a batch holds a record at or below the mark's ``ref_offset`` (a record that would be skipped), the
record at ``ref_offset`` is looked at, in the batch or on the broker (``RecordProbe``). The same fingerprint
means a redelivery of the same log: skip as before. A different record, or no record (the log now ends
before ``ref_offset``), means a new incarnation: its epoch is the mark's plus one, its base lies above
everything landed, a warning names the topic and partition, and ``cdcwh_log_resets_total`` counts it.

This works on any Kafka-compatible broker, including ones that report neither topic ids nor a reliable high
watermark (the embedded Tansu answers ListOffsets with the last batch's base offset plus one).

Not detected: a reset log that has already grown past the mark's offset *and* is read from a committed
position past it (the group's committed offsets survived the reset). Kafka deletes a deleted topic's
committed offsets, and a new cluster or a restarted memory-only broker has none, so consumption restarts at
the log's start and the check above applies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from cdcwh import metrics
from cdcwh.core.record import RawRecord

log = logging.getLogger(__name__)

MARKS_PROPERTY = "cdcwh.log-marks"

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class LogMark:
    """What bronze knows of one partition's log: see the module docstring."""

    epoch: int
    base: int
    ref_offset: int
    fingerprint: str | None  # None: a table landed before marks existed; checked by existence only


class RecordProbe(Protocol):
    """Reads one record of a partition from the broker."""

    def fetch(self, topic: str, partition: int, offset: int) -> tuple[int, str] | None:
        """(offset, fingerprint) of the first record at or after ``offset``; None when the log ends before
        ``offset``. Raises ``TransientError`` when the broker does not answer."""
        ...

    def close(self) -> None:
        """Release the broker connection, if one is open."""
        ...


def fingerprint(key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> str:
    """A short hash that tells one Kafka record from another at the same offset."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (key, value):
        digest.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
    digest.update(str(timestamp_ms).encode())
    return digest.hexdigest()


def record_fingerprint(record: RawRecord) -> str:
    return fingerprint(record.key, record.value, record.timestamp_ms)


def encode_marks(marks: Mapping[TopicPartition, LogMark]) -> str:
    return json.dumps(
        {
            f"{topic}/{partition}": [m.epoch, m.base, m.ref_offset, m.fingerprint]
            for (topic, partition), m in sorted(marks.items())
        }
    )


def decode_marks(text: str) -> dict[TopicPartition, LogMark]:
    raw: dict[str, list[object]] = json.loads(text)
    marks = {}
    for name, (epoch, base, ref_offset, print_) in raw.items():
        topic, _, partition = name.rpartition("/")
        marks[(topic, int(partition))] = LogMark(
            int(str(epoch)), int(str(base)), int(str(ref_offset)), None if print_ is None else str(print_)
        )
    return marks


def newer(a: LogMark | None, b: LogMark | None) -> LogMark | None:
    """The mark of the later incarnation, or of the later record within one."""
    if a is None or b is None:
        return a or b
    return a if (a.epoch, a.ref_offset) >= (b.epoch, b.ref_offset) else b


@dataclass(frozen=True)
class Reset:
    """A new incarnation found in a batch: for the log and the metric."""

    topic: str
    partition: int
    epoch: int
    base: int
    why: str


class IncarnationTracker:
    """Keeps each partition's current mark and turns Kafka offsets into bronze ``__offset`` values.

    ``known`` looks up the persisted mark and the highest landed ``__offset`` of a partition (the bronze
    writer reads both from its tables' snapshot summaries); the tracker caches what it learns."""

    def __init__(self, probe: RecordProbe | None) -> None:
        self.probe = probe
        self._marks: dict[TopicPartition, LogMark] = {}

    def place(
        self,
        records: Sequence[RawRecord],
        known: Callable[[TopicPartition], tuple[LogMark | None, int]],
    ) -> tuple[list[RawRecord], list[Reset]]:
        """The batch with each record's offset moved by its incarnation's base, and the resets found.

        ``known`` gives a partition's persisted mark and highest landed ``__offset`` (-1 when none)."""
        lowest: dict[TopicPartition, int] = {}
        for record in records:  # a partition's records arrive in offset order: the first is the lowest
            lowest.setdefault((record.topic, record.partition), record.offset)
        resets = []
        bases: dict[TopicPartition, int] = {}
        for tp, low in lowest.items():
            mark = self._marks.get(tp)
            if mark is None:
                persisted, landed = known(tp)
                mark = persisted if persisted is not None or landed < 0 else LogMark(0, 0, landed, None)
            if mark is not None and low <= mark.ref_offset:
                why = self._differs(tp, mark, records)
                if why is not None:
                    _, landed = known(tp)
                    base = max(landed, mark.base + mark.ref_offset) + 1
                    mark = LogMark(mark.epoch + 1, base, -1, None)
                    resets.append(Reset(tp[0], tp[1], mark.epoch, base, why))
                    log.warning(
                        "%s partition %d: a new incarnation of the log (%s); landing it from offset %d "
                        "as incarnation %d, bronze __offset = Kafka offset + %d",
                        tp[0],
                        tp[1],
                        why,
                        low,
                        mark.epoch,
                        base,
                    )
                    metrics.LOG_RESETS.labels(tp[0]).inc()
            if mark is not None:
                self._marks[tp] = mark
                if mark.base:
                    bases[tp] = mark.base
        if not bases:
            return list(records), resets
        return [
            r._replace(offset=r.offset + bases[(r.topic, r.partition)])
            if (r.topic, r.partition) in bases
            else r
            for r in records
        ], resets

    def _differs(self, tp: TopicPartition, mark: LogMark, records: Sequence[RawRecord]) -> str | None:
        """Why the log behind ``tp`` is not the one ``mark`` was taken from; None when it is."""
        for record in records:
            if (record.topic, record.partition) == tp and record.offset == mark.ref_offset:
                found: tuple[int, str] | None = (record.offset, record_fingerprint(record))
                break
        else:
            if self.probe is None:
                return None  # nothing to look with (a replay from quarantine): trust the landed offsets
            found = self.probe.fetch(tp[0], tp[1], mark.ref_offset)
        if found is None:
            return f"the log now ends before offset {mark.ref_offset}, which was landed"
        offset, print_ = found
        if offset != mark.ref_offset or mark.fingerprint is None:
            return None  # compacted away, or a mark without a fingerprint: the log reaches it, trust it
        if print_ != mark.fingerprint:
            return f"the record at offset {mark.ref_offset} is not the one landed"
        return None

    def advance(self, records: Iterable[RawRecord]) -> dict[TopicPartition, LogMark]:
        """Move each partition's mark to its newest record in ``records`` (offsets as placed); returns the
        marks of the partitions touched, to be written with the batch's commits."""
        newest: dict[TopicPartition, RawRecord] = {}
        for record in records:
            newest[(record.topic, record.partition)] = record
        touched = {}
        for tp, record in newest.items():
            mark = self._marks.get(tp, LogMark(0, 0, -1, None))
            kafka_offset = record.offset - mark.base
            if kafka_offset < mark.ref_offset:
                continue
            mark = LogMark(mark.epoch, mark.base, kafka_offset, record_fingerprint(record))
            self._marks[tp] = mark
            touched[tp] = mark
        return touched

    def marks(self, topic: str | None = None) -> dict[TopicPartition, LogMark]:
        return {tp: m for tp, m in self._marks.items() if topic is None or tp[0] == topic}


def log_marks(table: Table) -> dict[TopicPartition, LogMark]:
    """The log marks as of the table's current snapshot (the newest snapshot in its ancestry with them)."""
    current = table.current_snapshot()
    if current is None:
        return {}
    for snapshot in ancestors_of(current, table.metadata):
        if snapshot.summary is not None and MARKS_PROPERTY in snapshot.summary.additional_properties:
            return decode_marks(snapshot.summary.additional_properties[MARKS_PROPERTY])
    return {}
