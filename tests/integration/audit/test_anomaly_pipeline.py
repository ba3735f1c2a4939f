"""Anomaly detection through the transform on the shop generator's workload (real broker, Iceberg, DuckDB):
a null-rate spike injected into the orders' status is flagged, the same workload without it raises nothing.
Each transform batch reads a small slice of bronze (``max_offsets_per_partition``) and is profiled, so one
ingest gives a series of windows. Volume per minute counts changes by their source commit time, so a
workload paced over simulated minutes (``Pace``) with a drop injected is judged like a live one."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from cdcwh.config import Settings
from cdcwh.generate import DEFAULT_START, Drop, Pace, ShopGenerator
from cdcwh.quality import anomalies as anomalies_module
from cdcwh.quality.anomalies import (
    CLOCK_ALLOWANCE,
    SOURCE_CLOCK,
    VOLUME_MINUTE,
    note_source_clock,
    record_anomalies,
    volume_anomalies,
)
from cdcwh.warehouse import SILVER_FAILED, count_volume, open_warehouse, read_state, write_state
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


PER_MINUTE = 300  # streaming events per simulated minute, all tables
DROP_AT, DROP_MINUTES = 12, 2  # minutes 12 and 13 run at a tenth of the pace
MINUTES = 17  # the last two are incomplete (lateness), and 14 steady
FIRST = DEFAULT_START + timedelta(minutes=1)  # the snapshot, at the start, holds no changes


def test_a_volume_drop_on_a_paced_workload_is_flagged_and_its_steady_minutes_are_not(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    settings = env_overrides(
        settings_for(tmp_path / "data", kafka_bootstrap, unique_prefix),
        CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION="400",  # a few batches; judged once bronze is read
        CDCWH_AUDIT__ANOMALY_MIN_POINTS="5",
        CDCWH_AUDIT__VOLUME_LATENESS_S="60",
        CDCWH_AUDIT__PROFILE_INTERVAL_S="0",  # judged after every batch (the first ones with a backlog)
    )
    pace = Pace(PER_MINUTE, (Drop(DROP_AT, DROP_MINUTES, 0.1),))
    changes = [
        c
        for c in ShopGenerator(5, pace=pace).changes(PER_MINUTE * MINUTES)
        if c.ts_ms < (DEFAULT_START + timedelta(minutes=MINUTES)).timestamp() * 1000
    ]
    produce_changes(kafka_bootstrap, unique_prefix, changes)
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)

    con = open_warehouse(settings)
    try:
        batches = con.execute("SELECT count(*) FROM cdcwh.batches").fetchall()[0][0]
        assert batches >= 2, "judged after the backlog is read, not on the first slice"
        newest = max(c.ts_ms for c in changes)
        # complete: the minutes that ended a minute (the lateness) before the newest change
        last_complete = datetime.fromtimestamp(newest / 1000 - 60, UTC).replace(second=0, microsecond=0)
        last_complete -= timedelta(minutes=1)
        assert last_complete >= DEFAULT_START + timedelta(minutes=DROP_AT + DROP_MINUTES)
        assert read_state(con, VOLUME_MINUTE) == int(last_complete.timestamp())
        found = con.execute(
            "SELECT table_name, signal, observed_at, value, score FROM cdcwh.anomalies ORDER BY ALL"
        ).fetchall()
        drop = {DEFAULT_START + timedelta(minutes=DROP_AT + m) for m in range(DROP_MINUTES)}
        # nothing on the steady minutes before and after the drop, nor on other signals
        assert {(signal, at.astimezone(UTC) in drop) for _, signal, at, _, _ in found} == {("volume", True)}
        assert all(score < -6 for *_, score in found), found
        flagged = {(str(t), at.astimezone(UTC)) for t, _, at, _, _ in found}
        assert {(t, at) for t in ("orders", "order_items") for at in drop} <= flagged, found

        # judged again (a replay, the watermark lost): no anomaly twice
        con.execute("DELETE FROM cdcwh.state WHERE name = ?", [VOLUME_MINUTE])
        again = volume_anomalies(con, settings.audit)
        assert {(t, a.at) for t, _, a in again} == flagged
        assert record_anomalies(con, again, datetime.now(UTC)) == 0
        assert con.execute("SELECT count(*) FROM cdcwh.anomalies").fetchall()[0][0] == len(found)
    finally:
        con.close()


def applied(
    con: duckdb.DuckDBPyConnection, table: str, at: datetime, n: int, op: str = "u", *, counted: bool = True
) -> None:
    """``n`` changes spread over the minute from ``at``, applied to silver as a batch applies them: into
    ``silver_history`` and, with ``counted``, into the volume counts."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE applied AS SELECT ? AS __op, "
        "?::TIMESTAMPTZ + to_microseconds(range * 59000000 // ?) AS __source_ts FROM range(?)",
        [op, at, n, n],
    )
    con.execute(f"INSERT INTO silver_history.{table} SELECT * FROM applied")
    if counted:
        count_volume(con, table, "applied")


def test_a_minute_is_judged_once_it_is_late_enough_and_late_changes_do_not_reopen_it(tmp_path: Path) -> None:
    """Hand-written history (no broker): 150 orders changes a minute, then 3 in minute 30."""
    settings = Settings(data_dir=tmp_path / "data", audit={"enabled": False, "anomaly_min_points": 10})
    con = open_warehouse(settings)
    start = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)

    def changes(minute: int, n: int, op: str = "u", *, counted: bool = True) -> None:
        applied(con, "orders", start + timedelta(minutes=minute), n, op, counted=counted)

    def see(minute: float, backlog: bool = False) -> list[tuple[str, datetime, float]]:
        """A batch that applied changes up to ``minute``, then a judging pass."""
        note_source_clock(con, [pa.array([start + timedelta(minutes=minute)])], backlog=backlog)
        return [(t, a.at, a.value) for t, _, a in volume_anomalies(con, settings.audit)]

    con.execute("INSERT INTO cdcwh.silver_tables VALUES ('orders', 'shop.public.orders', ['id'])")
    con.execute("CREATE TABLE silver_history.orders (__op VARCHAR, __source_ts TIMESTAMPTZ)")
    # history applied before batches counted it: counted from silver_history once
    changes(0, 500, "r", counted=False)  # a snapshot: not changes
    for minute in range(30):
        changes(minute, 150, counted=False)
    changes(30, 3)
    assert see(30.9) == [], "minute 30 ended less than the lateness (120 s) ago"
    assert see(33, backlog=True) == [], "not while a bronze backlog remains"
    assert see(33) == [("orders", start + timedelta(minutes=30), 3.0)]
    changes(30, 147)  # the rest of minute 30, late: counted in later baselines, not judged again
    changes(31, 150)
    assert see(34) == []
    con.close()


def test_a_failed_table_is_not_judged_until_it_catches_up(tmp_path: Path) -> None:
    """Hand-written history: orders and customers change 150 times a minute; customers' slice fails from
    minute 30 (``silver_failed:customers``) while orders' changes move the source clock on."""
    settings = Settings(data_dir=tmp_path / "data", audit={"enabled": False, "anomaly_min_points": 10})
    con = open_warehouse(settings)
    start = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    for table in ("orders", "customers"):
        con.execute("INSERT INTO cdcwh.silver_tables VALUES (?, ?, ['id'])", [table, f"shop.public.{table}"])
        con.execute(f"CREATE TABLE silver_history.{table} (__op VARCHAR, __source_ts TIMESTAMPTZ)")

    def changes(table: str, minutes: range, n: int = 150) -> None:
        for minute in minutes:
            applied(con, table, start + timedelta(minutes=minute), n)

    def see(minute: float) -> list[tuple[str, datetime, float]]:
        note_source_clock(con, [pa.array([start + timedelta(minutes=minute)])], backlog=False)
        return [(t, a.at, a.value) for t, _, a in volume_anomalies(con, settings.audit)]

    changes("orders", range(35))
    changes("customers", range(30))
    write_state(con, SILVER_FAILED + "customers", 7)
    # minutes 30 and 31 complete; customers' are empty because its slice failed, not because it was quiet
    assert see(34) == []
    assert read_state(con, VOLUME_MINUTE) == int((start + timedelta(minutes=31)).timestamp())
    # caught up (the mark cleared by the batch that applied it): judged again, a real drop in minute 33
    changes("customers", range(30, 33))
    changes("customers", range(33, 34), 3)
    changes("orders", range(35, 37))
    changes("customers", range(34, 37))
    con.execute("DELETE FROM cdcwh.state WHERE name = ?", [SILVER_FAILED + "customers"])
    assert see(36) == [("customers", start + timedelta(minutes=33), 3.0)]
    con.close()


def test_a_far_future_commit_time_moves_the_clock_no_further_than_the_allowance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anomalies_module, "_last_clamp_warning", None)
    con = open_warehouse(Settings(data_dir=tmp_path / "data", audit={"enabled": False}))
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    allowed = int((now + CLOCK_ALLOWANCE).timestamp() * 1000)
    bogus = datetime(2099, 1, 1, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="cdcwh.quality.anomalies"):
        note_source_clock(con, [pa.array([now, bogus])], backlog=False, now=now)
        assert read_state(con, SOURCE_CLOCK) == allowed
        note_source_clock(con, [pa.array([bogus])], backlog=False, now=now)
    assert len([r for r in caplog.records if "2099-01-01" in r.getMessage()]) == 1, "warned once an hour"
    # a clock already pushed ahead (before the allowance) is brought back; a plausible one moves as before
    write_state(con, SOURCE_CLOCK, int(bogus.timestamp() * 1000))
    note_source_clock(con, [pa.array([now - timedelta(minutes=1)])], backlog=False, now=now)
    assert read_state(con, SOURCE_CLOCK) == allowed
    later = now + timedelta(minutes=10)
    note_source_clock(con, [pa.array([later])], backlog=False, now=later)
    assert read_state(con, SOURCE_CLOCK) == int(later.timestamp() * 1000)
    con.close()
