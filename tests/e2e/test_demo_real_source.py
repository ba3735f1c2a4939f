"""The demo on a real source, end to end through the CLI: the embedded source PostgreSQL, the real Debezium
engine (``cdcwh capture`` under the supervisor), the SQL workload, the pipeline, and ``cdcwh reconcile``.

And ``cdcwh run`` in a data dir holding a (stopped) embedded source, as a demo leaves it: it starts the source
and supervises capture with the three services; a workload into the source reaches silver, equal to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcwh.commands.demo import slot_state
from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.embedded import kafka_bootstrap, postgres_dsn
from cdcwh.embedded.registry import read_record
from cdcwh.errors import ServiceNotRunning
from cdcwh.generate.sql_workload import apply_workload
from cdcwh.source import EmbeddedSource, capture_available
from cdcwh.source import cluster as source_cluster

AVAILABLE, WHY = capture_available()
pytestmark = [
    pytest.mark.debezium,
    pytest.mark.skipif(not AVAILABLE, reason=f"capture cannot run here: {WHY}"),
]

SLOT = "cdcwh_shop"  # deploy/debezium/shop-connector.json
WAIT_S = 240.0  # a bound for a failure, not a measurement


def free_base_port(ports: int = 5) -> int:
    """A base port whose next ports are free too: ingest, transform, sink, supervisor, capture."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base < 65000 and all(_free(base + i) for i in range(ports)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def cdcwh(
    env: dict[str, str], *args: str, timeout: float = 300, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == expect, (
        f"cdcwh {' '.join(args)} exited {result.returncode}:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(tmp_path / "data")
    env["CDCWH_METRICS__PORT"] = str(free_base_port())
    env["CDCWH_SOURCE__JVM_HEAP"] = "512m"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def background_services(user_env: dict[str, str]) -> Iterator[Settings]:
    """`cdcwh broker` and `cdcwh postgres` running in the background for the data dir."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "cdcwh.cli", name], env=user_env, stdout=subprocess.DEVNULL)
        for name in ("broker", "postgres")
    ]
    settings = Settings(data_dir=Path(user_env["CDCWH_DATA_DIR"]))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                kafka_bootstrap(settings)
                postgres_dsn(settings)
                break
            except ServiceNotRunning:
                assert all(p.poll() is None for p in procs), "an embedded service exited"
                assert time.monotonic() < deadline, "embedded services did not start"
                time.sleep(0.3)
        yield settings
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0


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
