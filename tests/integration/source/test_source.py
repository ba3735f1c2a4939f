"""The embedded source cluster: logical decoding on TCP, the shop schema once, the same DSN after a restart,
found through the data dir, and reported when it died. No Java needed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.embedded.registry import pid_alive
from cdcwh.errors import AlreadyRunning, ServiceNotRunning
from cdcwh.source import EmbeddedSource, source_dsn

SHOP_SQL = PROJECT_ROOT / "sql" / "source" / "shop.sql"


def test_source_serves_the_shop_schema_for_logical_decoding_and_keeps_its_dsn(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ServiceNotRunning, match="cdcwh source"):
        source_dsn(settings)
    source = EmbeddedSource(settings.data_dir, settings.run_dir, SHOP_SQL)
    record = source.start()
    try:
        assert record.address.startswith("postgresql://postgres@127.0.0.1:") and record.address.endswith(
            "/shop"
        )
        assert source_dsn(settings) == record.address
        with psycopg.connect(record.address, autocommit=True) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (3,)
            conn.execute("INSERT INTO customers (id, email) VALUES (99, 'kept@x.org')")
        with pytest.raises(AlreadyRunning):
            EmbeddedSource(settings.data_dir, settings.run_dir, SHOP_SQL).start()
    finally:
        source.stop()
    assert not (settings.run_dir / "source.json").exists()

    with EmbeddedSource(settings.data_dir, settings.run_dir, SHOP_SQL) as again:
        assert again.dsn == record.address  # same port: a running capture reconnects to the same DSN
        with psycopg.connect(again.dsn) as conn:  # shop.sql is not loaded twice; the row is kept
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (4,)
        assert again.record is not None
        os.kill(again.record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while again.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not again.alive()
        with pytest.raises(ServiceNotRunning, match="not running"):
            source_dsn(settings)
    assert not pid_alive(record.pid)


def test_a_configured_source_dsn_is_used_as_is(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, source={"dsn": "postgresql://u:p@db.example/shop"})  # type: ignore[arg-type]
    assert source_dsn(settings) == "postgresql://u:p@db.example/shop"
