"""The real source end to end: the embedded source cluster, the real Debezium engine (``cdcwh capture``), the
session broker. Changes made with psycopg arrive on ``<prefix>.public.<table>`` with the right ops, a delete
is followed by its tombstone, and a stopped and restarted capture resumes from its offsets without loss."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.metrics import scrape
from cdcwh.source import EmbeddedSource, capture_available, source_dsn
from cdcwh.source.connector import engine_properties, read_connector
from tests.integration.source.helpers import Capture, Change, wait_for_changes
from tests.support.ports import free_base_port

AVAILABLE, WHY = capture_available()
pytestmark = pytest.mark.debezium
needs_debezium = pytest.mark.skipif(not AVAILABLE, reason=f"capture cannot run here: {WHY}")

SHOP_SQL = PROJECT_ROOT / "sql" / "source" / "shop.sql"
# rows of sql/source/shop.sql: the snapshot
SNAPSHOT = {"customers": 3, "products": 3, "orders": 4, "order_items": 5, "payments": 4}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[EmbeddedSource]:
    settings = Settings(data_dir=tmp_path / "data")
    with EmbeddedSource(settings.data_dir, settings.run_dir, SHOP_SQL) as embedded:
        yield embedded


def ops(changes: list[Change], table: str) -> Counter[str | None]:
    return Counter(c.op for c in changes if c.topic.endswith(f".public.{table}"))


def has(changes: list[Change], table: str, op: str | None, row_id: int) -> bool:
    return any(c.topic.endswith(f".public.{table}") and c.op == op and c.row_id == row_id for c in changes)


def tombstone_follows_delete(changes: list[Change], table: str, row_id: int) -> bool:
    """The delete of ``row_id`` is followed, later in its partition, by a tombstone with the same key."""
    rows = [c for c in changes if c.topic.endswith(f".public.{table}") and c.row_id == row_id]
    deletes = [i for i, c in enumerate(rows) if c.op == "d"]
    return bool(deletes) and any(
        c.op is None and c.raw_key == rows[deletes[0]].raw_key for c in rows[deletes[0] :]
    )


def test_the_shipped_connector_file_names_the_shop_topics_and_only_the_connection_is_replaced(
    tmp_path: Path,
) -> None:
    name, config = read_connector(PROJECT_ROOT / "deploy" / "debezium" / "shop-connector.json")
    props = engine_properties(
        config, name, "postgresql://cap:secret@127.0.0.1:6543/shopdb", tmp_path / "offsets.dat"
    )
    assert props["topic.prefix"] == "shop" and props["schema.include.list"] == "public"  # shop.public.<t>
    assert (props["database.hostname"], props["database.port"]) == ("127.0.0.1", "6543")
    assert (props["database.user"], props["database.password"], props["database.dbname"]) == (
        "cap",
        "secret",
        "shopdb",
    )
    assert props["offset.storage.file.filename"] == str(tmp_path / "offsets.dat")
    untouched = set(config) - {k for k in config if k.startswith(("database.", "tasks.", "topic.creation."))}
    untouched -= {"key.converter", "value.converter", "key.converter.schemas.enable"}
    untouched -= {"value.converter.schemas.enable"}
    assert {k: props[k] for k in untouched} == {k: config[k] for k in untouched}


@needs_debezium
def test_capture_relays_every_change_and_resumes_after_a_restart(
    tmp_path: Path, source: EmbeddedSource, kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert source_dsn(settings) == source.dsn  # found through the data dir, as `cdcwh capture` finds it
    # the shipped connector file with a topic prefix no other test uses (the session broker is shared)
    name, config = read_connector(PROJECT_ROOT / "deploy" / "debezium" / "shop-connector.json")
    connector = tmp_path / "connector.json"
    connector.write_text(json.dumps({"name": name, "config": {**config, "topic.prefix": unique_prefix}}))
    metrics_base = free_base_port()  # capture serves on base + 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env |= {
        "CDCWH_DATA_DIR": str(settings.data_dir),
        "CDCWH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CDCWH_SOURCE__CONNECTOR_FILE": str(connector),
        "CDCWH_SOURCE__JVM_HEAP": "512m",
        "CDCWH_SOURCE__LAG_POLL_S": "1",
        "CDCWH_METRICS__PORT": str(metrics_base),
    }
    capture = Capture(env, tmp_path, tmp_path / "capture.log")
    capture.start()
    try:
        snapshot_total = sum(SNAPSHOT.values())
        changes = wait_for_changes(
            kafka_bootstrap, unique_prefix, capture, lambda cs: len(cs) >= snapshot_total
        )
        assert {c.topic for c in changes} == {f"{unique_prefix}.public.{table}" for table in SNAPSHOT}
        assert all(ops(changes, table) == Counter({"r": n}) for table, n in SNAPSHOT.items())

        with psycopg.connect(source.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO customers (id, email, segment, country) VALUES (4, 'k@x.org', 'consumer', 'FR')"
            )
            conn.execute("UPDATE customers SET country = 'DE' WHERE id = 1")
            conn.execute("DELETE FROM payments WHERE id = 4")
            with conn.transaction():
                conn.execute(
                    "INSERT INTO orders (id, customer_id, status, order_date) "
                    "VALUES (5, 4, 'placed', '2026-03-01')"
                )
                conn.execute("UPDATE orders SET status = 'shipped' WHERE id = 3")

        def first_round(cs: list[Change]) -> bool:
            return has(cs, "orders", "u", 3) and tombstone_follows_delete(cs, "payments", 4)

        changes = wait_for_changes(kafka_bootstrap, unique_prefix, capture, first_round)
        assert len(changes) == snapshot_total + 6  # c, u, d + tombstone, c, u: nothing twice on a clean run
        assert ops(changes, "customers") == Counter({"r": 3, "c": 1, "u": 1})
        assert ops(changes, "payments") == Counter({"r": 4, "d": 1, None: 1})
        assert ops(changes, "orders") == Counter({"r": 4, "c": 1, "u": 1})
        assert has(changes, "customers", "c", 4) and has(changes, "customers", "u", 1)

        samples = scrape("127.0.0.1", metrics_base + 4)
        events = {labels["topic"]: value for labels, value in samples.get("cdcwh_capture_events_total", [])}
        assert events[f"{unique_prefix}.public.payments"] == 6
        assert "cdcwh_capture_lag_bytes" in samples and "cdcwh_capture_restarts_total" in samples

        assert capture.stop() == 0, capture.output()
        assert settings.capture_offsets_path.stat().st_size > 0

        # changes while capture is down
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO customers (id, email, segment, country) VALUES (5, 'l@x.org', 'corporate', 'IT')"
            )
            conn.execute("DELETE FROM customers WHERE id = 4")
            conn.execute("UPDATE products SET price = 26.00 WHERE id = 2")

        capture.start()

        def second_round(cs: list[Change]) -> bool:
            return has(cs, "products", "u", 2) and tombstone_follows_delete(cs, "customers", 4)

        after = wait_for_changes(kafka_bootstrap, unique_prefix, capture, second_round)
        assert has(after, "customers", "c", 5)
        # every change of both rounds is there at least once (a redelivery would be allowed) ...
        for table, op, row_id in [
            ("customers", "c", 4), ("customers", "u", 1), ("payments", "d", 4), ("orders", "c", 5),
            ("orders", "u", 3), ("customers", "c", 5), ("customers", "d", 4), ("products", "u", 2),
        ]:  # fmt: skip
            assert has(after, table, op, row_id), (table, op, row_id)
        # ... and the restart resumed from the stored offsets instead of taking a new snapshot
        assert sum(1 for c in after if c.op == "r") == snapshot_total
        assert capture.stop() == 0, capture.output()
    finally:
        capture.kill()


def test_source_command_refuses_when_a_source_dsn_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cdcwh.cli import main

    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDCWH_SOURCE__DSN", "postgresql://u:hunter2@db.example:5432/shop")
    assert main(["source"]) == 2
    err = capsys.readouterr().err
    assert "CDCWH_SOURCE__DSN is set (db.example:5432/shop)" in err and "hunter2" not in err
    assert not (tmp_path / "data" / "source").exists()


def test_capture_without_java_exits_2_saying_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cdcwh.cli import main

    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    ok, reason = capture_available()
    assert not ok and "no-java" in reason
    assert main(["capture"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "capture cannot run" in err
    assert "pip install 'cdcwh[debezium]'" in err and "openjdk-17-jre-headless" in err
