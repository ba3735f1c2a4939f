"""Anomaly detection through the transform on the shop generator's workload (real broker, Iceberg, DuckDB):
a null-rate spike injected into the orders' status is flagged, the same workload without it raises nothing.
Each transform batch reads a small slice of bronze (``max_offsets_per_partition``) and is profiled, so one
ingest gives a series of windows. Volume per minute is judged from the recorded batches (a drop injected
into their history is flagged; that history is written by hand, minutes cannot pass in a test)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdcwh.config import AuditSettings, Settings
from cdcwh.generate import ShopGenerator
from cdcwh.quality.anomalies import volume_anomalies
from cdcwh.warehouse import open_warehouse
from tests.support.pipeline import env_overrides, run_ingest_until_caught_up, settings_for
from tests.support.warehouse import produce_changes, run_transform_once

EVENTS = 1500
SPIKE = 300  # the last changes: every order's status null


def anomalies(settings: Settings) -> tuple[int, list[tuple[str, str, str]]]:
    """The silver windows of orders profiled on enough rows, and the anomalies found."""
    con = open_warehouse(settings, read_only=True)
    windows = con.execute(
        "SELECT count(DISTINCT profiled_at) FROM cdcwh.column_profiles WHERE layer = 'silver' "
        "AND table_name = 'orders' AND row_count >= 30"
    ).fetchall()[0][0]
    found = con.execute("SELECT table_name, column_name, signal FROM cdcwh.anomalies ORDER BY ALL").fetchall()
    con.close()
    return int(windows), [(str(t), str(c), str(s)) for t, c, s in found]


def test_steady_changes_raise_no_alarm_and_a_null_rate_spike_is_flagged(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = env_overrides(
        settings_for(tmp_path / "data", kafka_bootstrap, unique_prefix),
        CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION="15",
        CDCWH_AUDIT__PROFILE_INTERVAL_S="0",
        CDCWH_AUDIT__ANOMALY_MIN_POINTS="5",
    )
    changes = list(ShopGenerator(11).changes(EVENTS))
    steady, spike = changes[:-SPIKE], changes[-SPIKE:]
    produce_changes(kafka_bootstrap, unique_prefix, steady)
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    windows, found = anomalies(settings)
    assert windows >= 6, "enough profiled windows for a baseline"
    assert found == []

    nulled = [
        dataclasses.replace(c, after={**c.after, "status": None})
        if c.table == "orders" and c.after is not None
        else c
        for c in spike
    ]
    produce_changes(kafka_bootstrap, unique_prefix, nulled)
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    _, found = anomalies(settings)
    assert ("silver.orders", "status", "null_fraction") in found
    # in silver nothing else; in gold only what the null statuses flow into
    assert {(t, c) for t, c, _ in found if t.startswith("silver.")} == {("silver.orders", "status")}
    assert {t for t, _, _ in found} <= {"silver.orders", "gold.orders", "gold.fact_order_items"}, found


def test_a_volume_drop_in_the_batch_history_is_flagged(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = settings_for(tmp_path / "data", kafka_bootstrap, "unused")
    con = open_warehouse(settings)
    now = datetime(2026, 7, 1, 12, 0, 30, tzinfo=UTC)
    start = now.replace(second=0) - timedelta(minutes=40)
    batch = 0
    for minute in range(40):  # 4 batches a minute, 150 orders rows each; the last complete minute: 3 rows
        for part in range(4):
            batch += 1
            at = start + timedelta(minutes=minute, seconds=15 * part)
            rows = 1 if minute == 39 and part < 3 else 0 if minute == 39 else 150
            con.execute(
                "INSERT INTO cdcwh.batches VALUES (?, ?, ?, 'ok', NULL, ?, 0, ?)",
                [batch, at, at, rows, batch],
            )
            con.execute(
                "INSERT INTO cdcwh.batch_models VALUES (?, 'silver.orders', ?, ?, 'ok', NULL)",
                [batch, rows, rows],
            )
    audit = AuditSettings(anomaly_min_points=10)
    found = volume_anomalies(con, now, audit)
    assert [(t, a.signal, a.at, a.value) for t, _, a in found] == [
        ("orders", "volume", start + timedelta(minutes=39), 3.0)
    ]
    assert volume_anomalies(con, now, audit) == [], "a minute is judged once"
    con.close()
