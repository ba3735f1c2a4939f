"""Judging a profile against the same UTC hour of earlier days, on a real DuckDB warehouse file: the
time-of-day baseline needs profiles older than the newest ``anomaly_window``, so they must be loaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdcwh.config import Settings
from cdcwh.quality.anomalies import profile_anomalies
from cdcwh.quality.profile import PROFILE_COLUMNS, PROFILES_TABLE, ColumnProfile
from cdcwh.warehouse import open_warehouse

JUDGED_AT = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)


def profile(at: datetime, nulls: float) -> ColumnProfile:
    return ColumnProfile("silver", "orders", "note", at, None, 1000, nulls, 10, None, None, None, None, None)


def test_the_same_hour_on_earlier_days_is_the_baseline(tmp_path: Path) -> None:
    """At 09:xx on three earlier days half the notes are null; the last 70 minutes (none at 09:xx of an
    earlier day) none are. A half-null profile at 09:30 is the usual for that hour; one without nulls is
    not."""
    settings = Settings(data_dir=tmp_path / "data")
    history = [profile(JUDGED_AT - timedelta(days=d, minutes=m), 0.5) for d in (1, 2, 3) for m in range(5)]
    history += [profile(JUDGED_AT - timedelta(minutes=m), 0.0) for m in range(1, 71)]
    con = open_warehouse(settings)
    try:
        con.execute(PROFILES_TABLE)
        con.executemany(
            f"INSERT INTO cdcwh.column_profiles ({PROFILE_COLUMNS}) VALUES ({', '.join(['?'] * 13)})",  # noqa: S608
            [p.row() for p in history],
        )
        usual = profile(JUDGED_AT, 0.5)
        con.execute(
            f"INSERT INTO cdcwh.column_profiles ({PROFILE_COLUMNS}) VALUES ({', '.join(['?'] * 13)})",
            usual.row(),
        )  # noqa: S608
        assert profile_anomalies(con, [usual], settings.audit) == []
        con.execute("DELETE FROM cdcwh.column_profiles WHERE profiled_at = ?", [JUDGED_AT])
        unusual = profile(JUDGED_AT, 0.0)
        con.execute(
            f"INSERT INTO cdcwh.column_profiles ({PROFILE_COLUMNS}) VALUES ({', '.join(['?'] * 13)})",
            unusual.row(),
        )  # noqa: S608
        found = profile_anomalies(con, [unusual], settings.audit)
        assert [(table, column, a.signal, a.baseline.seasonal) for table, column, a in found] == [
            ("silver.orders", "note", "null_fraction", True)
        ]
    finally:
        con.close()
