"""Kill -9 ingest at random moments while it compacts its bronze tables between checkpoints: every offset is
in bronze exactly once afterwards, and compaction really ran (overwrite snapshots replaced small files).

Ingest runs with a maintenance pass every second and every file settled at once, so compaction commits
interleave with the appends the kills interrupt."""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from pathlib import Path

from pyiceberg.table.snapshots import Operation

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from tests.support.pipeline import TABLES, bronze, produce_shop, run_ingest_until_caught_up, settings_for

from .test_ingest_crash import kill, start_ingest

MAINTENANCE = {
    "CDCWH_ICEBERG__MAINTAIN_INTERVAL_S": "1",
    "CDCWH_ICEBERG__COMPACT_AFTER_S": "0",
    "CDCWH_ICEBERG__MIN_FILES_TO_COMPACT": "2",
}


def subscriptions(log: Path) -> int:
    """How many runs of ingest have logged their subscription so far."""
    return log.read_text(errors="replace").count("ingesting ") if log.exists() else 0


def wait_for_subscription(proc: subprocess.Popen[bytes], log: Path, before: int) -> None:
    """Wait until this run of ingest has subscribed to its topics (it then joins and consumes): the random
    moment is counted from there, not from the process start, which takes seconds on a loaded machine (a
    kill during the imports exercised nothing, and compaction then never ran)."""
    deadline = time.monotonic() + 120
    while subscriptions(log) <= before:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "ingest did not subscribe: " + log.read_text()[-3000:]
        time.sleep(0.05)


def test_sigkill_around_compaction_commits_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = "crashc"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    settings.data_dir.mkdir(parents=True)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=6000, seed=13)
    log = tmp_path / "ingest.log"
    rng = random.Random(8)
    for _ in range(4):
        before = subscriptions(log)
        proc = start_ingest(settings, log, **MAINTENANCE)
        wait_for_subscription(proc, log, before)
        time.sleep(rng.uniform(2.5, 6.0))
        assert proc.poll() is None, log.read_text()[-3000:]
        kill(proc)
    run_ingest_until_caught_up(settings, **MAINTENANCE)

    deletes = Counter(c.table for c in changes if c.op == "d")
    per_table = Counter(c.table for c in changes)
    catalog = open_catalog(settings)
    compactions = 0
    for table in TABLES:
        rows = bronze(settings, f"{prefix}.public.{table}")
        positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
        duplicates = [p for p, n in Counter(positions).items() if n > 1]
        assert not duplicates, f"{table}: offsets landed twice: {duplicates[:5]}"
        assert len(positions) == per_table[table] + deletes[table], f"{table}: offsets lost"
        iceberg = catalog.load_table(
            (settings.iceberg.namespace, bronze_table_name(f"{prefix}.public.{table}"))
        )
        compactions += sum(
            1
            for snapshot in iceberg.snapshots()
            if snapshot.summary is not None and snapshot.summary.operation == Operation.OVERWRITE
        )
    logs = log.read_text()
    assert compactions > 0 or "compacted" in logs, "no compaction ran: the test did not exercise it"
