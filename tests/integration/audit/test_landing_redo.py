"""A landing consumed again after a crash between the bronze commit and the audit write: its rejected record
is already in the quarantine table (real Iceberg SqlCatalog), so the redo quarantines nothing, yet its audit
rows still carry the record for ``bad_records`` (deduplicated there by key)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cdcwh.audit.rows import landing_rows
from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RawRecord
from cdcwh.ingest.bronze import IcebergBronzeWriter
from tests.support.debezium import captured

TOPIC = "zoo.public.type_zoo"
AT = datetime(2026, 3, 2, tzinfo=UTC)


def test_a_redo_sends_the_already_quarantined_records_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", kafka={"topics": r"^zoo\.[^.]+\.[^.]+$"})
    good = captured("type_zoo")[:3]
    assert {r.topic for r in good} == {TOPIC}
    bad = RawRecord(TOPIC, 0, len(good), 1_700_000_000_000, b'{"id": 1}', b"{not json")
    records = [*good, bad]
    catalog = open_catalog(settings)
    bronze = IcebergBronzeWriter(catalog, settings.iceberg.namespace, {}, max_value_bytes=10**6)
    first = bronze.land(records)
    assert [r.offset for r in first.quarantined] == [bad.offset]
    redo = bronze.land(records)
    assert redo.quarantined == []
    assert sum(redo.landed.values()) == 0
    rows = landing_rows(
        [(r.topic, r.partition, r.offset) for r in records],
        rows_in=len(records),
        landed=0,
        rejections=redo.quarantined,
        rejected=redo.rejected,
        started=AT,
        finished=AT,
    )
    assert "pipeline_runs" not in rows  # a pure redo adds no run
    assert [(r[0], r[1], r[2]) for r in rows["bad_records"]] == [(TOPIC, 0, bad.offset)]
