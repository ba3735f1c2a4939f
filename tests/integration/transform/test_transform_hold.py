"""The transform service keeps the DuckDB file open across batches while they find new rows (closing it
checkpoints it), and releases it when a batch finds nothing new, when ``hold_s`` is up, and with ``hold_s=0``
after every batch. Another process can open the file exactly when the service has released it. Real broker,
ingest and Iceberg catalog; the other process is a separate Python interpreter, as ``cdcwh query`` is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator
from cdcwh.transform.service import TransformService
from tests.support.pipeline import run_ingest_until_caught_up, settings_for
from tests.support.warehouse import produce_changes

READ_BATCHES = """
import sys, duckdb
try:
    con = duckdb.connect(sys.argv[1], read_only=True)
except duckdb.IOException as exc:
    print("locked" if "lock" in str(exc).lower() else exc)
    sys.exit(3)
print(con.execute("SELECT count(*) FROM cdcwh.batches WHERE status = 'ok'").fetchall()[0][0])
"""


def read_from_another_process(settings: Settings) -> str:
    """The number of committed batches as another process sees them, or ``locked``."""
    path = str(settings.data_dir / "warehouse.duckdb")
    result = subprocess.run(
        [sys.executable, "-c", READ_BATCHES, path], capture_output=True, text=True, timeout=60
    )
    assert result.returncode in (0, 3), result.stderr[-2000:]
    return result.stdout.strip()


def bronze_with_changes(tmp_path: Path, kafka_bootstrap: str, prefix: str, **transform: float) -> Settings:
    settings = settings_for(
        tmp_path / "data",
        kafka_bootstrap,
        prefix,
        transform={"max_offsets_per_partition": 100, **transform},
    )
    produce_changes(kafka_bootstrap, prefix, list(ShopGenerator(21).changes(1500)))
    run_ingest_until_caught_up(settings)
    return settings


def test_the_file_is_held_across_busy_batches_and_released_when_idle(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    settings = bronze_with_changes(tmp_path, kafka_bootstrap, "hold1", hold_s=600)
    service = TransformService(settings)
    batches = 0
    while service.step().batch_id is not None:
        batches += 1
        assert service.holds_warehouse
        assert read_from_another_process(settings) == "locked"
    assert batches > 1, "the backlog took several batches"
    assert not service.holds_warehouse, "a batch that found nothing new released the file"
    # everything the held batches committed is there for the next reader
    assert read_from_another_process(settings) == str(batches)


def test_hold_zero_releases_the_file_after_every_batch(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = bronze_with_changes(tmp_path, kafka_bootstrap, "hold2", hold_s=0)
    service = TransformService(settings)
    assert service.step().batch_id == 1
    assert not service.holds_warehouse
    assert read_from_another_process(settings) == "1"
    assert service.step().batch_id == 2
    assert read_from_another_process(settings) == "2"
    service.run_once()
    assert not service.holds_warehouse


def test_a_failed_batch_releases_the_file(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = bronze_with_changes(tmp_path, kafka_bootstrap, "hold3", hold_s=600)
    service = TransformService(settings)
    assert service.step().batch_id == 1
    assert service.holds_warehouse

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the batch failed")

    monkeypatch.setattr("cdcwh.transform.service.run_batch", broken)
    with pytest.raises(RuntimeError, match="the batch failed"):
        service.step()
    assert not service.holds_warehouse
    assert read_from_another_process(settings) == "1"
