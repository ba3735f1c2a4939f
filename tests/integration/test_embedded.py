"""The embedded broker and Postgres: start, find, refuse a second start, busy port, killed process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedBroker, EmbeddedPostgres, kafka_bootstrap, postgres_dsn
from cdcwh.embedded.broker import broker_answers
from cdcwh.errors import AlreadyRunning, EmbeddedStartError, ServiceNotRunning


def test_broker_starts_answers_and_is_found_through_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with EmbeddedBroker(settings.run_dir, tmp_path / "logs") as broker:
        assert broker.address.startswith("127.0.0.1:")
        assert broker_answers(broker.address)
        assert kafka_bootstrap(settings) == broker.address
    with pytest.raises(ServiceNotRunning, match="cdcwh broker"):
        kafka_bootstrap(settings)


def test_second_broker_for_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path / "run", tmp_path / "logs") as first:
        with pytest.raises(AlreadyRunning, match=first.address):
            EmbeddedBroker(tmp_path / "run", tmp_path / "logs").start()


def test_busy_port_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedStartError, match=f"port {port} .* in use"):
            EmbeddedBroker(tmp_path / "run", tmp_path / "logs", port=port).start()


def test_killed_broker_is_reported_with_how_to_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    broker = EmbeddedBroker(settings.run_dir, tmp_path / "logs")
    record = broker.start()
    os.kill(record.pid, signal.SIGKILL)
    assert broker.process is not None
    broker.process.wait(timeout=10)
    with pytest.raises(ServiceNotRunning, match=r"not running.*cdcwh broker"):
        kafka_bootstrap(settings)
    # a new start replaces the stale record, on the address the services already know
    with EmbeddedBroker(settings.run_dir, tmp_path / "logs") as again:
        assert kafka_bootstrap(settings) == again.address == record.address
    broker.stop()


def test_cli_broker_exits_when_the_broker_dies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdcwh.cli", "broker"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        record = wait_for_record(tmp_path, "broker.json", proc)
        os.kill(record, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "the embedded broker exited" in out


def test_run_restarts_a_dead_broker_it_started_on_the_same_address(tmp_path: Path) -> None:
    from cdcwh.commands.run import infrastructure

    settings = Settings(data_dir=tmp_path, postgres={"dsn": "postgresql://unused"})
    with infrastructure(settings) as infra:
        assert infra.broker is not None and infra.broker.process is not None
        address = infra.broker.address
        infra.broker.process.kill()
        infra.broker.process.wait(timeout=10)
        infra.check()
        assert infra.broker.address == address
        assert broker_answers(address)
        assert kafka_bootstrap(settings) == address
    assert not (settings.run_dir / "broker.json").exists()


def wait_for_record(data_dir: Path, name: str, proc: subprocess.Popen[str]) -> int:
    """The pid an embedded service command recorded in the data dir."""
    import json

    path = data_dir / "run" / name
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, "the command exited early"
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.2)
    time.sleep(0.2)  # written whole: rename
    return int(json.loads(path.read_text())["pid"])


def test_cli_broker_records_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdcwh.cli", "broker"], env=env, stdout=subprocess.PIPE, text=True
    )
    settings = Settings(data_dir=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                address = kafka_bootstrap(settings)
                break
            except ServiceNotRunning:
                assert proc.poll() is None, "cdcwh broker exited early"
                assert time.monotonic() < deadline, "cdcwh broker did not record an address"
                time.sleep(0.2)
        assert broker_answers(address)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert address in out
    assert not (settings.run_dir / "broker.json").exists()


def test_postgres_starts_twice_refused_and_killed_reported(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    postgres = EmbeddedPostgres(tmp_path, settings.run_dir)
    postgres.start()
    try:
        with psycopg.connect(postgres_dsn(settings)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("cdcwh",)
        with pytest.raises(AlreadyRunning, match="psql"):
            EmbeddedPostgres(tmp_path, settings.run_dir).start()
        assert postgres.record is not None
        os.kill(postgres.record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        with pytest.raises(ServiceNotRunning, match=r"not running.*cdcwh postgres"):
            while time.monotonic() < deadline:
                postgres_dsn(settings)
                time.sleep(0.2)
    finally:
        postgres.stop()
    # restarting after the kill recovers the cluster and its data dir
    with EmbeddedPostgres(tmp_path, settings.run_dir) as again:
        with psycopg.connect(again.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_nothing_recorded_names_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ServiceNotRunning, match="CDCWH_POSTGRES__DSN"):
        postgres_dsn(settings)
    with pytest.raises(ServiceNotRunning, match="CDCWH_KAFKA__BOOTSTRAP_SERVERS"):
        kafka_bootstrap(settings)
