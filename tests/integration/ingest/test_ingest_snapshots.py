"""Bronze keeps a bounded number of Iceberg snapshots (each commit rewrites metadata listing every snapshot,
so unbounded history makes every commit slower), and expiring history loses no row and no landed offset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.bronze.offsets import OFFSETS_PROPERTY, landed_offsets
from cdcwh.ingest.bronze import expire_snapshots
from tests.support.pipeline import TABLES, bronze, produce_shop, run_ingest_until_caught_up, settings_for


def test_expiry_keeps_the_newest_snapshots_and_every_row(tmp_path: Path) -> None:
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse"
    )
    catalog.create_namespace("n")
    table = catalog.create_table(("n", "t"), schema=pa.schema([("id", pa.int64())]))
    for i in range(12):
        table.append(pa.table({"id": [i]}), snapshot_properties={OFFSETS_PROPERTY: f'{{"t":{{"0":{i}}}}}'})
        expire_snapshots(table, kept=3)
        assert len(table.snapshots()) < 6  # expired once there are 2 x kept
    table = catalog.load_table(("n", "t"))
    assert len(table.snapshots()) >= 3
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == list(range(12))
    current = table.current_snapshot()
    assert current is not None and current.summary is not None
    assert current.summary[OFFSETS_PROPERTY] == '{"t":{"0":11}}'


def test_ingest_bounds_bronze_history(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> None:
    prefix = "snap1"
    settings = settings_for(tmp_path_factory.mktemp("snap"), kafka_bootstrap, prefix)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=3000, seed=5)
    # many small checkpoints: every table gets well over 2 x 2 commits
    run_ingest_until_caught_up(
        settings, CDCWH_ICEBERG__SNAPSHOTS_KEPT="2", CDCWH_INGEST__COMMIT_RECORDS="100"
    )
    catalog = open_catalog(settings)
    per_table = Counter(c.table for c in changes)
    deletes = Counter(c.table for c in changes if c.op == "d")
    for name in TABLES:
        topic = f"{prefix}.public.{name}"
        table = catalog.load_table((settings.iceberg.namespace, bronze_table_name(topic)))
        assert 2 <= len(table.snapshots()) < 4, name
        rows = bronze(settings, topic)
        assert rows.num_rows == per_table[name] + deletes[name], name  # nothing lost with the history
        positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
        assert len(positions) == len(set(positions)), name
        # the landed offsets in the current snapshot still name the last offset of every partition
        landed = landed_offsets(table)
        for partition in {p for p, _ in positions}:
            assert landed[(topic, partition)] == max(o for p, o in positions if p == partition)
