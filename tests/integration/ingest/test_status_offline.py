"""``cdcwh status`` with no broker (and no PostgreSQL): it still shows what bronze and the warehouse hold,
and says which service is unavailable, instead of failing outright."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cdcwh.config import Settings
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.catalog import open_catalog
from tests.support.debezium import captured


def test_status_without_a_broker_shows_bronze(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    writer = IcebergBronzeWriter(
        open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=1 << 24
    )
    records = captured("type_zoo")
    writer.land(records)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env.update(CDCWH_DATA_DIR=str(settings.data_dir), CDCWH_KAFKA__TOPICS=r"^zoo\.", COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = " ".join(result.stdout.split())
    assert "Kafka unavailable" in out and "no Kafka broker" in out
    # the partition's landed records are counted from bronze: every captured record is at offset 0..n-1
    assert f"zoo.public.type_zoo │ 0 │ - │ - │ {len(records)} │" in out
