"""Incremental reads of bronze: the rows landed since the last micro-batch.

The transform watermark is, per (topic, partition), the highest Kafka offset already applied. Bronze holds
every offset exactly once (docs/bronze.md), so "new rows" are those above the watermark and at or below the
table's landed offsets at the snapshot being read. The snapshot is pinned, so appends made during the read
are left for the next batch.

Which files to read: every append records the table's landed offsets in its snapshot summary, so the newest
snapshot whose offsets the watermarks already cover marks where the new rows start; only the data files the
appends after it added can hold them. Reading just those keeps a batch's cost independent of the table's
history (planning a scan opens every manifest, one per append since the table was created, and took a fifth
of a busy transform after only a minute). When no retained snapshot is covered (the first batch, or one after
the transform stopped for longer than ``CDCWH_ICEBERG__SNAPSHOTS_KEPT`` appends) or a newer snapshot is not an
append, the batch plans a full scan filtered by the watermarks instead, which Iceberg prunes by ``__offset``
statistics.

Only the bronze tables whose topic matches ``CDCWH_KAFKA__TOPICS`` are read (``bronze_tables(..., topics=)``):
narrowing the regex takes a table out of the transform without touching the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce

import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThan, LessThanOrEqual, Or
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation, ancestors_of

from cdcwh.bronze.offsets import OFFSETS_PROPERTY, TopicPartition, decode_offsets, landed_offsets


@dataclass(frozen=True)
class BronzeSlice:
    """New rows of one bronze table and the watermark they advance to. ``silver`` is the silver table they go
    to (set by the transform); ``error`` says why the rows could not be read (then ``rows`` is empty and
    ``upper`` too: the watermarks stay where they are)."""

    topic: str
    table: str
    rows: pa.Table
    upper: dict[TopicPartition, int]
    silver: str = ""
    error: str | None = None
    more: bool = False
    """More rows were landed than the slice holds (``max_offsets_per_partition``): a backlog remains."""


def read_new_rows(
    table: Table, topic: str, watermarks: Mapping[TopicPartition, int], max_offsets_per_partition: int
) -> BronzeSlice | None:
    """The rows above the watermarks (at most ``max_offsets_per_partition`` offsets per partition) at the
    table's current snapshot: pass it as just loaded (``bronze_tables``), it is not refreshed here."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    landed = landed_offsets(table)
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for tp, high in landed.items():
        low = watermarks.get(tp, -1)
        if high > low:
            ranges[tp] = (low, min(high, low + max_offsets_per_partition))
    if not ranges:
        return None
    # built as expressions, not as a string for pyiceberg to parse (its parser showed in a busy transform's
    # profile: docs/benchmarks.md, "What limits each figure")
    parts = [offset_range(partition, low, high) for (_, partition), (low, high) in sorted(ranges.items())]
    condition = reduce(lambda left, right: Or(left, right), parts)
    files = files_after_covered(table, watermarks)
    if files is None:
        rows = table.scan(row_filter=condition, snapshot_id=snapshot.snapshot_id).to_arrow()
    else:
        scan = ArrowScan(table.metadata, table.io, table.schema(), condition)
        rows = scan.to_table([FileScanTask(data_file) for data_file in files])  # a list: it is read twice
    upper = {tp: high for tp, (_, high) in ranges.items()}
    more = any(landed[tp] > high for tp, high in upper.items())
    return BronzeSlice(topic=topic, table=table.name()[-1], rows=rows, upper=upper, more=more)


def offset_range(partition: int, low: int, high: int) -> BooleanExpression:
    """``__partition = partition AND __offset > low AND __offset <= high``."""
    # pyiceberg's predicates are pydantic models whose positional constructors mypy cannot see
    return And(
        EqualTo("__partition", partition),  # type: ignore[call-arg,arg-type]
        GreaterThan("__offset", low),  # type: ignore[call-arg,arg-type]
        LessThanOrEqual("__offset", high),  # type: ignore[call-arg,arg-type]
    )


def files_after_covered(table: Table, watermarks: Mapping[TopicPartition, int]) -> list[DataFile] | None:
    """The data files added by the appends after the newest snapshot whose landed offsets ``watermarks``
    cover; None when no retained snapshot is covered, and the caller must plan a full scan."""
    current = table.current_snapshot()
    if current is None:
        return []
    new: set[int] = set()
    for snapshot in ancestors_of(current, table.metadata):
        summary = snapshot.summary
        offsets = summary.additional_properties.get(OFFSETS_PROPERTY) if summary is not None else None
        if offsets is not None and covered(decode_offsets(offsets), watermarks):
            break
        if summary is None or summary.operation != Operation.APPEND:
            return None  # not written by ingest's appends: only a full scan knows what it changed
        new.add(snapshot.snapshot_id)
    else:
        # no retained snapshot is covered: a first batch, or one after a longer pause than the history
        # (expiry also clears the oldest kept snapshot's parent, so "no parent" does not mean "first")
        return None
    files: list[DataFile] = []
    for manifest in current.manifests(table.io):
        if manifest.content != ManifestContent.DATA or manifest.added_snapshot_id not in new:
            continue
        # by the snapshot that added the file, not by ADDED status: a manifest merge keeps that snapshot id
        # on the entries it rewrites as EXISTING
        files.extend(
            entry.data_file
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
            if entry.snapshot_id in new
        )
    return files


def covered(landed: Mapping[TopicPartition, int], watermarks: Mapping[TopicPartition, int]) -> bool:
    """Every landed offset is at or below its watermark (everything landed so far has been read)."""
    return all(offset <= watermarks.get(tp, -1) for tp, offset in landed.items())
