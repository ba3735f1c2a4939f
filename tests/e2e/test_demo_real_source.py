"""The demo on a real source, end to end through the CLI: the embedded source PostgreSQL, the real Debezium
engine (``cdcwh capture`` under the supervisor), the SQL workload, the pipeline, and ``cdcwh reconcile``.

And ``cdcwh run`` in a data dir holding a (stopped) embedded source, as a demo leaves it: it starts the source
and supervises capture with the three services; a workload into the source reaches silver, equal to it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcwh.commands.demo import slot_state
from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.embedded.registry import read_record
from cdcwh.generate.sql_workload import apply_workload
from cdcwh.source import EmbeddedSource, capture_available
from cdcwh.source import cluster as source_cluster
from tests.support import cli
from tests.support.cli import cdcwh

AVAILABLE, WHY = capture_available()
pytestmark = [
    pytest.mark.debezium,
    pytest.mark.skipif(not AVAILABLE, reason=f"capture cannot run here: {WHY}"),
]

SLOT = "cdcwh_shop"  # deploy/debezium/shop-connector.json
WAIT_S = 240.0  # a bound for a failure, not a measurement


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    return cli.user_env(tmp_path / "data", CDCWH_SOURCE__JVM_HEAP="512m")


@pytest.fixture
def background_services(user_env: dict[str, str]) -> Iterator[Settings]:
    with cli.background_services(user_env) as settings:
        yield settings


def test_demo_captures_a_real_postgres_and_reconciles_it(user_env: dict[str, str]) -> None:
    result = cdcwh(user_env, "demo", "--source", "postgres", "--events", "1500", "--seed", "3", timeout=600)
    out = result.stdout
    assert "records captured by Debezium" in out
    assert "rows per layer" in out and "marts.daily_revenue" in out
    assert "does not match" not in out + result.stderr  # PostgreSQL holds exactly the gold marts
    for table in ("customers", "products", "orders", "order_items", "payments"):
        assert f"{table}: " in out and "rows, equal" in out
    assert "source and silver are equal for every table" in out
    # the demo stopped what it started: the source is down, its cluster (and slot) kept in the data dir
    settings = Settings(data_dir=Path(user_env["CDCWH_DATA_DIR"]))
    record = read_record(settings.run_dir, source_cluster.NAME)
    assert record is None or not record.alive
    assert (settings.data_dir / "source" / "pgdata" / "PG_VERSION").exists()


def test_run_supervises_capture_when_a_source_is_recorded(
    user_env: dict[str, str], background_services: Settings
) -> None:
    settings = background_services
    # a data dir with an embedded source cluster, not running, as a demo leaves it
    with EmbeddedSource(settings.data_dir, settings.run_dir, PROJECT_ROOT / "sql" / "source" / "shop.sql"):
        pass  # initialised, shop loaded, stopped

    log = settings.data_dir / "run-command.log"
    with log.open("ab") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "cdcwh.cli", "run"], env=user_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + WAIT_S
        dsn = None
        while True:  # `cdcwh run` started the embedded source and capture streams from its slot
            assert run.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            record = read_record(settings.run_dir, source_cluster.NAME)
            if record is not None and record.alive:
                dsn = record.address
                state = slot_state(dsn, SLOT)
                if state is not None and state[0]:
                    break
            time.sleep(0.5)
        assert "running capture, ingest, transform and sink" in log.read_text(errors="replace")

        apply_workload(dsn, events=400, seed=9)
        with psycopg.connect(dsn, autocommit=True) as conn:  # see demo.wait_until_captured
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            conn.execute("UPDATE customers SET email = email WHERE id = 1")
        while True:
            assert run.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "capture did not confirm the workload's WAL"
            state = slot_state(dsn, SLOT, str(row[0]))
            if state is not None and state[1]:
                break
            time.sleep(0.5)
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=120)
    assert code == 0, log.read_text(errors="replace")[-4000:]
    text = log.read_text(errors="replace")
    assert "started capture" in text

    # capture stopped with the run (the embedded source too): start the source again, bring the topics to
    # the end (`run --until-caught-up` drains the topics, without capture) and compare
    source = subprocess.Popen(
        [sys.executable, "-m", "cdcwh.cli", "source"], env=user_env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while (record := read_record(settings.run_dir, source_cluster.NAME)) is None or not record.alive:
            assert source.poll() is None and time.monotonic() < deadline, "the source did not start again"
            time.sleep(0.3)
        cdcwh(user_env, "run", "--until-caught-up")
        result = cdcwh(user_env, "reconcile")
        for table in ("customers", "products", "orders", "order_items", "payments"):
            assert any(
                line.startswith(f"{table}: ") and "equal" in line for line in result.stdout.splitlines()
            )
        with psycopg.connect(record.address) as conn:
            orders = conn.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        with psycopg.connect(postgres_dsn(settings)) as conn:
            assert conn.execute("SELECT count(*) FROM marts.orders").fetchall()[0][0] == orders
    finally:
        source.send_signal(signal.SIGTERM)
        assert source.wait(timeout=60) == 0
