"""The transform's bronze reads: only the files of appends the watermarks have not covered, and the same
rows as a full scan in every case, including a watermark older than the retained snapshot history.

A real Iceberg SQL catalog on local files; the appends carry landed offsets as ingest's do.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from cdcwh.bronze.offsets import (
    OFFSETS_PROPERTY,
    TopicPartition,
    encode_offsets,
    landed_offsets,
    merge_offsets,
)
from cdcwh.ingest.bronze import expire_snapshots
from cdcwh.transform.bronze_reader import files_after_covered, read_new_rows

TOPIC = "shop.public.orders"
PARTITIONS = 3
PER_APPEND = 7  # offsets per partition per append


@pytest.fixture
def table(tmp_path: Path) -> Table:
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse"
    )
    catalog.create_namespace("bronze")
    schema = pa.schema([("__partition", pa.int32()), ("__offset", pa.int64()), ("v", pa.string())])
    return catalog.create_table(("bronze", "orders"), schema=schema)


def append(table: Table, n: int) -> dict[TopicPartition, int]:
    """Append the n-th batch (offsets n*PER_APPEND .. in every partition); returns the landed offsets."""
    partitions, offsets = [], []
    for partition in range(PARTITIONS):
        for offset in range(n * PER_APPEND, (n + 1) * PER_APPEND):
            partitions.append(partition)
            offsets.append(offset)
    rows = pa.table(
        {
            "__partition": pa.array(partitions, pa.int32()),
            "__offset": pa.array(offsets, pa.int64()),
            "v": [f"{p}/{o}" for p, o in zip(partitions, offsets, strict=True)],
        }
    )
    landed = merge_offsets(
        landed_offsets(table), ((TOPIC, p, o) for p, o in zip(partitions, offsets, strict=True))
    )
    table.append(rows, snapshot_properties={OFFSETS_PROPERTY: encode_offsets(landed)})
    return landed


def file_paths(table: Table) -> set[str]:
    return {task.file.file_path for task in table.scan().plan_files()}


def positions(rows: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))


def expected(after: dict[TopicPartition, int], upto: int) -> list[tuple[int, int]]:
    """Every (partition, offset) above ``after`` and below ``upto``."""
    return sorted((p, o) for p in range(PARTITIONS) for o in range(after.get((TOPIC, p), -1) + 1, upto))


def test_a_batch_reads_only_the_files_of_appends_after_its_watermarks(table: Table) -> None:
    landed = [append(table, n) for n in range(3)]
    files_then = file_paths(table)
    for n in range(3, 6):
        append(table, n)
    new_files = file_paths(table) - files_then

    files = files_after_covered(table, landed[2])
    assert files is not None
    assert {f.file_path for f in files} == new_files

    for path in files_then:  # the batch must not open the covered files: take them away
        Path(path.removeprefix("file://")).unlink()
    piece = read_new_rows(table, TOPIC, landed[2], max_offsets_per_partition=1_000)
    assert piece is not None
    assert positions(piece.rows) == expected(landed[2], 6 * PER_APPEND)
    assert piece.upper == {(TOPIC, p): 6 * PER_APPEND - 1 for p in range(PARTITIONS)}


def test_a_first_batch_plans_a_full_scan_and_a_caught_up_one_reads_nothing(table: Table) -> None:
    for n in range(4):
        append(table, n)
    assert files_after_covered(table, {}) is None
    piece = read_new_rows(table, TOPIC, {}, max_offsets_per_partition=1_000)
    assert piece is not None and positions(piece.rows) == expected({}, 4 * PER_APPEND)

    assert files_after_covered(table, landed_offsets(table)) == []
    assert read_new_rows(table, TOPIC, landed_offsets(table), max_offsets_per_partition=1_000) is None


def test_a_watermark_older_than_the_retained_history_falls_back_to_a_full_scan(table: Table) -> None:
    first = append(table, 0)
    for n in range(1, 8):
        append(table, n)
        expire_snapshots(table, kept=2)
    assert len(table.snapshots()) < 8  # history was cut

    assert files_after_covered(table, first) is None  # the snapshot that covers `first` is gone
    piece = read_new_rows(table, TOPIC, first, max_offsets_per_partition=1_000)
    assert piece is not None
    assert positions(piece.rows) == expected(first, 8 * PER_APPEND)


def test_capped_batches_read_every_row_once(table: Table) -> None:
    for n in range(5):
        append(table, n)
    watermarks: dict[TopicPartition, int] = {}
    read: list[tuple[int, int]] = []
    batches = 0
    while (piece := read_new_rows(table, TOPIC, watermarks, max_offsets_per_partition=5)) is not None:
        read.extend(positions(piece.rows))
        watermarks.update(piece.upper)
        batches += 1
        if batches == 3:  # new appends while the transform works through the backlog
            append(table, 5)
    assert sorted(read) == expected({}, 6 * PER_APPEND)
    assert len(read) == len(set(read))
    assert batches > 6
