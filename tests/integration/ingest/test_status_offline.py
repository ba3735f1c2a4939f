"""``cdcwh status`` with no broker (and no PostgreSQL): it still shows what bronze holds and says which part
is unreachable (exit 2), instead of failing outright."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.ingest.bronze import IcebergBronzeWriter
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
        [sys.executable, "-m", "cdcwh.cli", "status", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]  # a part unreachable
    status = json.loads(result.stdout)
    parts = {p["name"]: p for p in status["parts"]}
    assert not parts["kafka"]["reachable"] and "no Kafka broker" in parts["kafka"]["error"]
    assert parts["bronze"]["reachable"]
    # the partition's landed records are counted from bronze: every captured record is at offset 0..n-1
    assert [(s["topic"], s["partition"], s["end"], s["in_bronze"]) for s in status["source"]] == [
        ("zoo.public.type_zoo", 0, None, len(records))
    ]
