"""Kill -9 the ingest service repeatedly while it consumes; afterwards every offset is in bronze exactly once.

At least one kill lands between an Iceberg commit and the Kafka offset commit: the service is started with
the fault-injection pause (CDCWH_FAULT_PAUSE_AFTER_LAND_S), which holds it right after a batch is landed and
before quixstreams commits the offsets, and the test kills it inside that window.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cdcwh.config import Settings
from tests.support.metrics import counter_total
from tests.support.pipeline import (
    TABLES,
    bronze,
    cli_env,
    produce_shop,
    run_ingest_until_caught_up,
    settings_for,
)

EVENTS = 12_000


def start_ingest(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = cli_env(
        settings, CDCWH_INGEST__COMMIT_RECORDS="1500", CDCWH_INGEST__COMMIT_INTERVAL_S="0.5", **extra
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cdcwh.cli", "ingest"], env=env, stdout=out, stderr=out
        )


def landed_batches(settings: Settings) -> int:
    marker = settings.data_dir / "fault-landed"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_random_moments_and_between_commits(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = "crash1"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    settings.data_dir.mkdir(parents=True)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=EVENTS, seed=11)
    log = tmp_path / "ingest.log"
    rng = random.Random(5)

    # 1. killed inside the window after the Iceberg commit and before the Kafka commit, twice
    for _ in range(2):
        before = landed_batches(settings)
        proc = start_ingest(settings, log, CDCWH_FAULT_PAUSE_AFTER_LAND_S="30")
        deadline = time.monotonic() + 120
        while landed_batches(settings) == before:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "ingest landed nothing"
            time.sleep(0.05)
        kill(proc)

    # 2. killed at random moments while consuming
    for _ in range(3):
        proc = start_ingest(settings, log)
        time.sleep(rng.uniform(4.0, 10.0))
        assert proc.poll() is None, log.read_text()[-3000:]
        kill(proc)

    skipped_before = counter_total("cdcwh_events_skipped")
    run_ingest_until_caught_up(settings)
    skipped_final = counter_total("cdcwh_events_skipped") - skipped_before

    deletes = Counter(c.table for c in changes if c.op == "d")
    per_table = Counter(c.table for c in changes)
    for table in TABLES:
        rows = bronze(settings, f"{prefix}.public.{table}")
        positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
        duplicates = [p for p, n in Counter(positions).items() if n > 1]
        assert not duplicates, f"{table}: offsets landed twice: {duplicates[:5]}"
        assert len(positions) == per_table[table] + deletes[table], f"{table}: offsets lost"
    # the kills inside the commit window really made Kafka redeliver landed records, which were skipped
    skipped = [
        int(line.split("skipped ")[1].split(",")[0])
        for line in log.read_text().splitlines()
        if "skipped " in line
    ]
    assert skipped_final > 0 or any(n > 0 for n in skipped), (
        "no redelivered record was skipped: the crash window was not exercised"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_flushes_commits_and_exits_zero(
    tmp_path: Path, kafka_bootstrap: str, signum: signal.Signals
) -> None:
    prefix = f"stop{int(signum)}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=1500, seed=2)
    log = tmp_path / "ingest.log"
    proc = start_ingest(settings, log)
    deadline = time.monotonic() + 120
    total = len(changes) + sum(1 for c in changes if c.op == "d")
    while True:
        try:
            landed = sum(bronze(settings, f"{prefix}.public.{t}").num_rows for t in TABLES)
        except Exception:
            landed = 0
        if landed == total:
            break
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    # the Kafka offsets were committed on the way out: a restart re-reads nothing
    consumed = counter_total("cdcwh_events_consumed")
    run_ingest_until_caught_up(settings)
    assert counter_total("cdcwh_events_consumed") == consumed
