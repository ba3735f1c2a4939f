"""Bronze maintenance after many small commits: manifests stay few, settled files are compacted without a row
added or lost, landed offsets and the transform's incremental reads stay exact, orphans are removed.

In-process against a real Iceberg SqlCatalog; the records are the shop generator's Debezium JSON, given Kafka
coordinates here (the broker adds nothing to what is tested)."""

from __future__ import annotations

import os
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.manifest import ManifestFile

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.bronze.offsets import landed_offsets
from cdcwh.config import IcebergSettings, Settings
from cdcwh.core.record import RawRecord
from cdcwh.generate import ShopGenerator, encode
from cdcwh.ingest import maintenance
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.maintenance import MERGE_PROPERTIES, maintain
from cdcwh.transform.bronze_reader import read_new_rows

PREFIX = "maint"
TOPIC = f"{PREFIX}.public.orders"
PARTITIONS = 3


def order_records(events: int) -> list[RawRecord]:
    """The orders topic's records of a shop workload, partitioned by key, offsets per partition."""
    next_offset = [0] * PARTITIONS
    records = []
    for change in ShopGenerator(9).changes(events):
        for record in encode(change, prefix=PREFIX):
            if record.topic != TOPIC:
                continue
            partition = zlib.crc32(record.key) % PARTITIONS
            records.append(
                RawRecord(
                    TOPIC, partition, next_offset[partition], 1_700_000_000_000, record.key, record.value
                )
            )
            next_offset[partition] += 1
    return records


def sorted_rows(rows: pa.Table) -> list[dict[str, object]]:
    """Every column of every row, in (partition, offset) order."""
    return rows.sort_by([("__partition", "ascending"), ("__offset", "ascending")]).to_pylist()


Landed = tuple[Settings, IcebergBronzeWriter, list[RawRecord]]


def land_small_commits(tmp_path: Path, commits: int) -> Landed:
    settings = Settings(data_dir=tmp_path / "data")
    writer = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=1 << 20
    )
    records = order_records(1500)
    for start in range(0, 3 * commits, 3):  # small commits, as one checkpoint a second would make
        writer.land(records[start : start + 3])
    return settings, writer, records


@pytest.fixture
def landed(tmp_path: Path) -> Landed:
    """100 small commits: enough files and manifests for compaction and manifest merging to matter."""
    return land_small_commits(tmp_path, 100)


@pytest.fixture
def landed_few(tmp_path: Path) -> Landed:
    """A few commits: the orphan pass needs a table with files, not a long history."""
    return land_small_commits(tmp_path, 10)


def test_many_small_commits_are_compacted_without_losing_a_row(landed: Landed) -> None:
    settings, writer, records = landed
    table = open_catalog(settings).load_table((settings.iceberg.namespace, bronze_table_name(TOPIC)))
    assert all(table.properties.get(k) == v for k, v in MERGE_PROPERTIES.items())
    current = table.current_snapshot()
    assert current is not None
    manifests = len(current.manifests(table.io))
    assert manifests <= int(MERGE_PROPERTIES["commit.manifest.min-count-to-merge"])  # merged on append
    before_rows = table.scan().to_arrow()
    before_offsets = landed_offsets(table)
    before_files = len(table.inspect.data_files())
    assert before_files >= 100
    # the transform has read the first half of every partition
    watermarks = {tp: offset // 2 for tp, offset in before_offsets.items()}
    want_new = read_new_rows(table, TOPIC, watermarks, 1_000_000)
    assert want_new is not None

    policy = IcebergSettings(compact_after_s=0, min_files_to_compact=2, orphan_age_s=600)
    result = maintain(table, policy, now=datetime.now(UTC) + timedelta(seconds=1))
    table.refresh()
    assert result.files_rewritten == before_files and result.files_written == 1
    assert len(table.inspect.data_files()) == 1
    after_rows = table.scan().to_arrow()
    assert sorted_rows(after_rows) == sorted_rows(before_rows)  # the same rows, none added or lost
    assert after_rows.num_rows == before_rows.num_rows
    assert landed_offsets(table) == before_offsets  # the exactly-once offsets are unchanged
    got_new = read_new_rows(
        table, TOPIC, watermarks, 1_000_000
    )  # a replace snapshot: neither skip nor re-read
    assert got_new is not None and sorted_rows(got_new.rows) == sorted_rows(want_new.rows)

    # ingest goes on: a redelivered batch is skipped, new records land
    again = writer.land(records[:300])
    assert sum(again.landed.values()) == 0 and sum(again.skipped.values()) == 300
    more = writer.land(records[300:330])
    assert sum(more.landed.values()) == 30
    table.refresh()
    assert table.scan().to_arrow().num_rows == 330


def test_orphan_files_are_removed_and_referenced_ones_kept(landed_few: Landed) -> None:
    settings, _, _ = landed_few
    table = open_catalog(settings).load_table((settings.iceberg.namespace, bronze_table_name(TOPIC)))
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    stray_old = data_dir / "orphan-old.parquet"
    stray_old.write_bytes(b"not committed")
    week_ago = time.time() - 7 * 86_400
    os.utime(stray_old, (week_ago, week_ago))
    rows = table.scan().to_arrow().num_rows
    policy = IcebergSettings(compact_after_s=10**9, orphan_age_s=86_400)  # no compaction here
    now = datetime.now(UTC)
    # the first pass only notes it: a reader that loaded older metadata may still read an unreferenced file
    assert maintain(table, policy, now=now).orphans_removed == 0 and stray_old.exists()
    stray_new = data_dir / "orphan-new.parquet"
    stray_new.write_bytes(b"an append in flight")
    later = now + timedelta(days=2)
    os.utime(stray_new, (later.timestamp() - 60, later.timestamp() - 60))  # written a minute before the pass
    result = maintain(table, policy, now=later)
    # the stray file, and the manifests of snapshots expired by then (unreferenced since the first pass)
    assert result.orphans_removed >= 1
    assert not stray_old.exists() and stray_new.exists()  # too young, and first seen now: maybe in flight
    table.refresh()
    assert table.scan().to_arrow().num_rows == rows  # every referenced file is still there
    assert pc.sum(pc.is_valid(table.scan().to_arrow()["__offset"])).as_py() == rows


def test_a_pass_reads_only_the_manifests_it_has_not_read(
    landed_few: Landed, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, writer, records = landed_few
    table = open_catalog(settings).load_table((settings.iceberg.namespace, bronze_table_name(TOPIC)))
    read: list[str] = []
    fetch = ManifestFile.fetch_manifest_entry

    def counted(self: ManifestFile, *args: Any, **kwargs: Any) -> Any:
        read.append(self.manifest_path)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(ManifestFile, "fetch_manifest_entry", counted)
    first = maintenance._referenced(table)
    assert read and len(read) == len(set(read))  # snapshots share manifests: each read once in a pass
    read.clear()
    assert maintenance._referenced(table) == first and read == []  # nothing new: nothing read again
    writer.land(records[300:303])
    table.refresh()
    current = table.current_snapshot()
    assert current is not None
    newest = {m.manifest_path for m in current.manifests(table.io)} - {
        m.manifest_path for s in table.snapshots()[:-1] for m in s.manifests(table.io)
    }
    later = maintenance._referenced(table)
    assert set(read) == newest and newest  # only the commit's new manifest(s)
    files = table.inspect.data_files()["file_path"].to_pylist()
    assert {maintenance._local(p) for p in files} <= later  # every data file, the new one too, is referenced
