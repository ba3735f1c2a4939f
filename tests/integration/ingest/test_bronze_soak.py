"""A week of checkpoints in a minute: after hundreds (with CDCWH_TEST_SOAK_EVENTS, thousands) of small bronze
commits with maintenance between them, every table has few manifests and data files, every row and the
exactly-once offsets are intact, and the transform (run between the commits, across compaction snapshots)
and a rebuild from bronze both give the marts an independent computation expects.

In-process: the bronze writer lands the shop generator's Debezium JSON a few records at a time, as one ingest
checkpoint a second would; the broker only carries the transform's gold change feed. Maintenance runs with
every file settled at once (``compact_after_s=0``): the age rule is what a deployment waits for, and time is
compressed here. bench/soak.py times the same loop at a larger scale (docs/benchmarks.md, "Soak")."""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter
from pathlib import Path

from pyiceberg.manifest import ManifestContent

from cdcwh.bronze.catalog import TOPIC_PROPERTY, open_catalog
from cdcwh.bronze.offsets import landed_offsets
from cdcwh.config import IcebergSettings, Settings
from cdcwh.core.record import RawRecord
from cdcwh.generate import ShopGenerator, SourceChange, encode
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.maintenance import MERGE_PROPERTIES, maintain_all
from cdcwh.replay.rebuild import rebuild
from cdcwh.transform.service import TransformService
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.warehouse import read_marts

PREFIX = "soak"
PARTITIONS = 3
RECORDS_PER_LANDING = 2
MAINTAIN_EVERY = 50  # landings
BATCH_EVERY = 75  # landings
# shop change events: the default keeps the suite fast (about 400 table commits); CDCWH_TEST_SOAK_EVENTS=1400
# gives well over a thousand (about 8 minutes here)
EVENTS = int(os.environ.get("CDCWH_TEST_SOAK_EVENTS", "400"))
MIN_FILES_TO_COMPACT = 8


def shop_records(changes: list[SourceChange]) -> list[RawRecord]:
    """Every topic's records of a shop workload, partitioned by key, with Kafka offsets per partition."""
    next_offset: Counter[tuple[str, int]] = Counter()
    records = []
    for change in changes:
        for record in encode(change, prefix=PREFIX):
            partition = zlib.crc32(record.key) % PARTITIONS
            offset = next_offset[(record.topic, partition)]
            next_offset[(record.topic, partition)] += 1
            timestamp = int(time.time() * 1000)
            records.append(RawRecord(record.topic, partition, offset, timestamp, record.key, record.value))
    return records


def data_manifests_and_files(table: object) -> tuple[int, int]:
    current = table.current_snapshot()  # type: ignore[attr-defined]
    assert current is not None
    io = table.io  # type: ignore[attr-defined]
    manifests = [m for m in current.manifests(io) if m.content == ManifestContent.DATA]
    files = sum(len(m.fetch_manifest_entry(io, discard_deleted=True)) for m in manifests)
    return len(manifests), files


def test_many_small_commits_keep_tables_small_and_marts_right(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "topics": rf"^{PREFIX}\.[^.]+\.[^.]+$",
            "gold_topic_prefix": f"{unique_prefix}.gold",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
        },
    )
    generator = ShopGenerator(5)
    changes = list(generator.changes(EVENTS))
    records = shop_records(changes)
    writer = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=1 << 20, snapshots_kept=20
    )
    policy = IcebergSettings(compact_after_s=0, min_files_to_compact=MIN_FILES_TO_COMPACT, orphan_age_s=600)
    transform = TransformService(settings)
    table_commits = rewritten = 0
    try:
        for landing, start in enumerate(range(0, len(records), RECORDS_PER_LANDING), start=1):
            result = writer.land(records[start : start + RECORDS_PER_LANDING])
            assert not result.quarantined
            table_commits += len(result.landed)
            if landing % MAINTAIN_EVERY == 0:
                rewritten += sum(
                    r.files_rewritten for r in maintain_all(writer.catalog, writer.namespace, policy)
                )
            if landing % BATCH_EVERY == 0:
                transform.step()  # incremental reads across the compactions' replace snapshots
        transform.run_once()
    finally:
        transform.release()
    assert table_commits >= EVENTS // 2 and rewritten > 0

    # every table: all rows, exact offsets, few manifests and files
    maintain_all(writer.catalog, writer.namespace, policy)
    per_topic = Counter(r.topic for r in records)
    highest: dict[tuple[str, int], int] = {}
    for r in records:
        highest[(r.topic, r.partition)] = max(highest.get((r.topic, r.partition), -1), r.offset)
    catalog = open_catalog(settings)
    seen = set()
    for identifier in catalog.list_tables(settings.iceberg.namespace):
        table = catalog.load_table(identifier)
        topic = table.properties.get(TOPIC_PROPERTY)
        if topic is None:
            continue  # the quarantine table: empty here
        seen.add(topic)
        rows = table.scan().to_arrow()
        assert rows.num_rows == per_topic[topic], topic
        assert len(set(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))) == (
            rows.num_rows
        ), f"{topic}: a row landed twice"
        assert landed_offsets(table) == {tp: o for tp, o in highest.items() if tp[0] == topic}, topic
        manifests, files = data_manifests_and_files(table)
        assert manifests <= int(MERGE_PROPERTIES["commit.manifest.min-count-to-merge"]), (topic, manifests)
        assert files < MIN_FILES_TO_COMPACT, (topic, files)
    assert seen == set(per_topic)

    # the transform's marts, and a rebuild's, are what an independent computation expects
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    streamed = read_marts(settings)
    assert compare_marts(streamed, expected) == []
    rebuild(settings)
    assert compare_marts(read_marts(settings), expected) == []
    assert read_marts(settings) == streamed
