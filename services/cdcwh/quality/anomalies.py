"""The anomaly detector (``cdcwh.core.anomaly``) fed from the warehouse file, its findings kept there.

Signals:

- per source (silver) table, **volume**: its changes per minute of source commit time (``__source_ts`` of
  the inserts, updates and deletes silver applied; snapshot reads are not changes), zero for a minute
  without any, from the table's first change on. Each batch adds what it applied to
  ``cdcwh.volume_minutes`` in its transaction (``warehouse.count_volume``), so a pass reads a few thousand
  counts rather than a week of ``silver_history`` (counted from it once, on a warehouse older than the
  table); minutes older than any baseline reads are dropped. A minute is complete, and judged once, when the
  newest source commit time the transform has seen (of any table: ``cdcwh.state`` ``source_clock``, kept by
  each batch with ``note_source_clock``) is ``audit.volume_lateness_s`` past its end, and only while the
  transform has read all of bronze (``bronze_backlog`` 0: during a catch-up the tables advance through
  source time at different speeds). A table whose slice failed (``silver_failed:<table>``) is not judged
  until a batch applies it again: its minutes meanwhile are not quiet, only missing. The clock runs at most
  ``CLOCK_ALLOWANCE`` ahead of this host's clock (one bogus far-future commit time would complete every
  minute up to it). ``anomaly_volume_minute`` is the last minute judged, in epoch seconds; judging goes
  forward from it, at most ``MAX_MINUTES_JUDGED`` minutes a pass, oldest first;
- per source table, **freshness**: seconds since the last minute (of the transform's clock) in which its
  batches read rows (``cdcwh.batch_models`` by the minute ``cdcwh.batches`` started), judged each complete
  minute once (``anomaly_minute``): a stopped pipeline is stale, whatever the source did;
- per profiled column, **null_fraction** and **mean** of each new profile (``profile.py``) against the
  column's earlier profiles; a window of fewer than ``MIN_PROFILE_ROWS`` rows is neither judged nor used.

Findings go to ``cdcwh.anomalies`` (``ANOMALIES_TABLE``, once per table, column, signal and minute: a minute
judged again after a replay adds nothing), shipped to ``audit.anomalies``, counted in
``cdcwh_anomalies_total{table,signal}`` and logged as warnings.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh import metrics
from cdcwh.config import AuditSettings
from cdcwh.core.anomaly import (
    Anomaly,
    Point,
    detect,
    freshness,
    history_for,
    last_complete_minute,
    per_minute,
)
from cdcwh.quality.profile import ColumnProfile
from cdcwh.warehouse import SILVER_FAILED, count_volume, quote, read_state, table_exists, write_state

log = logging.getLogger(__name__)

ANOMALY_MINUTE: Final = "anomaly_minute"
"""The last minute of freshness judged (epoch seconds, the transform's clock)."""
VOLUME_MINUTE: Final = "anomaly_volume_minute"
"""The last minute of volume judged (epoch seconds, source commit time)."""
SOURCE_CLOCK: Final = "source_clock"
"""The newest source commit time a batch applied (epoch milliseconds)."""
BRONZE_BACKLOG: Final = "bronze_backlog"
"""1 when the last batch left bronze rows unread (it read ``max_offsets_per_partition`` of a partition)."""
VOLUME_COUNTED: Final = "volume_minutes_counted"
"""1 once ``cdcwh.volume_minutes`` holds the counts of ``silver_history`` (filled once, then by batches)."""
CLOCK_ALLOWANCE: Final = timedelta(minutes=5)
"""How far ``source_clock`` may run ahead of this host's clock: one bogus far-future commit time must not
complete (and judge as empty) the minutes up to it."""
CLAMP_WARNING_EVERY: Final = timedelta(hours=1)
MIN_PROFILE_ROWS: Final = 30
SEASONAL_LOOKBACK: Final = timedelta(days=7)
MAX_MINUTES_JUDGED: Final = 120
"""Minutes of volume judged in one pass at most (the oldest due; the rest by the next passes). Freshness
judges at most the newest ``FRESHNESS_MINUTES_JUDGED``: a stopped transform cannot judge its idle minutes."""
FRESHNESS_MINUTES_JUDGED: Final = 5
SKIPPED_COLUMNS: Final = frozenset({"_version"})
"""Grows with every batch by design: its mean always drifts."""
Measured = tuple[datetime, int, float | None, float | None, float | None]
"""A profile's time, rows, null fraction, mean and standard deviation."""
ANOMALIES_TABLE: Final = """
CREATE TABLE IF NOT EXISTS cdcwh.anomalies (
    table_name VARCHAR NOT NULL, column_name VARCHAR NOT NULL, signal VARCHAR NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL, value DOUBLE NOT NULL, baseline_median DOUBLE NOT NULL,
    baseline_mad DOUBLE NOT NULL, score DOUBLE NOT NULL, threshold DOUBLE NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL, shipped BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (table_name, column_name, signal, observed_at))
"""


def _judge(signal: str, series: Sequence[Point], audit: AuditSettings) -> Anomaly | None:
    return detect(
        signal,
        series,
        threshold=audit.anomaly_threshold,
        window=audit.anomaly_window,
        min_points=audit.anomaly_min_points,
    )


def _judge_minutes(
    signal: str, table: str, series: Sequence[Point], first_due: datetime, audit: AuditSettings
) -> list[tuple[str, str, Anomaly]]:
    """Judge each point of a per-minute series from ``first_due`` on against the points before it."""
    found = []
    for index, point in enumerate(series):
        if point.at >= first_due:
            anomaly = _judge(signal, [*history_for(series, index, audit.anomaly_window), point], audit)
            if anomaly is not None:
                found.append((table, "", anomaly))
    return found


def note_source_clock(
    con: duckdb.DuckDBPyConnection,
    source_times: Sequence[pa.Array],
    *,
    backlog: bool,
    now: datetime | None = None,
) -> None:
    """In a batch: advance ``source_clock`` to the newest of ``source_times``, but never past the wall clock
    (``now``) by more than ``CLOCK_ALLOWANCE``, and record the backlog."""
    newest = [t for times in source_times if len(times) and (t := pc.max(times).as_py()) is not None]
    if newest:
        clock = max(int(max(newest).timestamp() * 1000), read_state(con, SOURCE_CLOCK) or 0)
        limit = int(((now or datetime.now(UTC)) + CLOCK_ALLOWANCE).timestamp() * 1000)
        if clock > limit:
            _warn_clamped(clock, limit)
        write_state(con, SOURCE_CLOCK, min(clock, limit))
    write_state(con, BRONZE_BACKLOG, int(backlog))


_last_clamp_warning: float | None = None


def _warn_clamped(clock_ms: int, limit_ms: int) -> None:
    """Warn that a source commit time lies in the future, at most once per ``CLAMP_WARNING_EVERY``."""
    global _last_clamp_warning  # noqa: PLW0603 - the rate limit is per process
    now = time.monotonic()
    if _last_clamp_warning is not None and now - _last_clamp_warning < CLAMP_WARNING_EVERY.total_seconds():
        return
    _last_clamp_warning = now
    log.warning(
        "a source commit time (__source_ts) of %s is more than %s ahead of this host's clock: the volume "
        "clock (cdcwh.state %s) is held at %s (a source host's clock ahead, or a bogus timestamp)",
        datetime.fromtimestamp(clock_ms / 1000, UTC).isoformat(),
        CLOCK_ALLOWANCE,
        SOURCE_CLOCK,
        datetime.fromtimestamp(limit_ms / 1000, UTC).isoformat(),
    )


def volume_anomalies(con: duckdb.DuckDBPyConnection, audit: AuditSettings) -> list[tuple[str, str, Anomaly]]:
    """Judge the complete minutes of source commit time not judged yet: ``(table, '', anomaly)`` for each
    outlier. Nothing while a bronze backlog remains."""
    clock = read_state(con, SOURCE_CLOCK)
    if clock is None or read_state(con, BRONZE_BACKLOG):
        return []
    lateness = timedelta(seconds=audit.volume_lateness_s)
    last_complete = min(  # the clamp of note_source_clock allows a little drift; judge no minute past now
        last_complete_minute(datetime.fromtimestamp(clock / 1000, UTC), lateness),
        last_complete_minute(datetime.now(UTC), lateness),
    )
    judged = read_state(con, VOLUME_MINUTE)
    if judged is None:
        first_due = last_complete - timedelta(minutes=MAX_MINUTES_JUDGED - 1)
    else:
        first_due = datetime.fromtimestamp(judged, UTC) + timedelta(minutes=1)
    last_due = min(last_complete, first_due + timedelta(minutes=MAX_MINUTES_JUDGED - 1))
    if first_due > last_due:
        return []
    since = first_due - max(SEASONAL_LOOKBACK, timedelta(minutes=audit.anomaly_window))
    failed = _failed_tables(con)
    if failed:
        log.info("volume of %s not judged up to %s: failed, not caught up", ", ".join(failed), last_due)
    found = []
    for table, counts in sorted(_source_minutes(con, since, last_due).items()):
        if table not in failed:
            found += _judge_minutes(
                "volume", table, per_minute(counts, min(counts), last_due), first_due, audit
            )
    write_state(con, VOLUME_MINUTE, int(last_due.timestamp()))
    forget_volume(con, since - timedelta(days=1))  # a day to spare: judging again starts at most 2 h earlier
    return found


def _failed_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The silver tables whose slice failed and has not been applied since (``transform/batch.py``)."""
    rows = con.execute(
        "SELECT name FROM cdcwh.state WHERE starts_with(name, ?) ORDER BY name", [SILVER_FAILED]
    ).fetchall()
    return [str(name).removeprefix(SILVER_FAILED) for (name,) in rows]


def _source_minutes(
    con: duckdb.DuckDBPyConnection, since: datetime, last: datetime
) -> dict[str, dict[datetime, int]]:
    """Per silver table, its changes per minute of source commit time from ``since`` to ``last``."""
    _count_history_once(con)
    rows = con.execute(
        "SELECT table_name, minute, changes FROM cdcwh.volume_minutes WHERE minute BETWEEN ? AND ?",
        [int(since.timestamp()) // 60, int(last.timestamp()) // 60],
    ).fetchall()
    counts: dict[str, dict[datetime, int]] = defaultdict(dict)
    for table, minute, n in rows:
        counts[str(table)][datetime.fromtimestamp(int(minute) * 60, UTC)] = int(n)
    return counts


def _count_history_once(con: duckdb.DuckDBPyConnection) -> None:
    """Fill ``cdcwh.volume_minutes`` from ``silver_history`` once (a warehouse whose batches did not count
    yet); from then on each batch counts what it applies (``count_volume``)."""
    if read_state(con, VOLUME_COUNTED) is not None:
        return
    con.execute("DELETE FROM cdcwh.volume_minutes")
    for (table,) in con.execute("SELECT name FROM cdcwh.silver_tables ORDER BY name").fetchall():
        if table_exists(con, "silver_history", str(table)):
            count_volume(con, str(table), f"silver_history.{quote(str(table))}")
    write_state(con, VOLUME_COUNTED, 1)


def forget_volume(con: duckdb.DuckDBPyConnection, before: datetime) -> None:
    """Drop the counts of the minutes before ``before`` (older than any baseline reads)."""
    con.execute("DELETE FROM cdcwh.volume_minutes WHERE minute < ?", [int(before.timestamp()) // 60])


def freshness_anomalies(
    con: duckdb.DuckDBPyConnection, now: datetime, audit: AuditSettings
) -> list[tuple[str, str, Anomaly]]:
    """Judge the complete minutes (of ``now``) not judged yet: ``(table, '', anomaly)`` for each outlier."""
    last_complete = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    judged = read_state(con, ANOMALY_MINUTE)
    first_due = last_complete - timedelta(minutes=FRESHNESS_MINUTES_JUDGED - 1)
    if judged is not None:
        first_due = max(first_due, datetime.fromtimestamp(judged, UTC) + timedelta(minutes=1))
    if first_due > last_complete:
        return []
    since = last_complete - max(
        SEASONAL_LOOKBACK, timedelta(minutes=audit.anomaly_window + FRESHNESS_MINUTES_JUDGED)
    )
    rows = con.execute(
        """SELECT substr(m.model, 8), date_trunc('minute', b.started_at), sum(m.rows_in)
        FROM cdcwh.batch_models AS m JOIN cdcwh.batches AS b USING (batch_id)
        WHERE starts_with(m.model, 'silver.') AND b.started_at >= ? AND b.started_at < ?
        GROUP BY ALL""",
        [since, last_complete + timedelta(minutes=1)],
    ).fetchall()
    counts: dict[str, dict[datetime, int]] = defaultdict(dict)
    for table, minute, n in rows:
        counts[str(table)][minute.astimezone(UTC)] = int(n or 0)
    found = []
    for table, per_table in sorted(counts.items()):
        series = freshness(per_minute(per_table, min(per_table), last_complete))
        found += _judge_minutes("freshness", table, series, first_due, audit)
    write_state(con, ANOMALY_MINUTE, int(last_complete.timestamp()))
    return found


def profile_anomalies(
    con: duckdb.DuckDBPyConnection, profiles: Sequence[ColumnProfile], audit: AuditSettings
) -> list[tuple[str, str, Anomaly]]:
    """Judge each new profile's null fraction and mean against the column's earlier profiles."""
    judged = [p for p in profiles if p.row_count >= MIN_PROFILE_ROWS and p.column_name not in SKIPPED_COLUMNS]
    if not judged:
        return []
    since = min(p.profiled_at for p in judged) - SEASONAL_LOOKBACK
    tables = sorted({f"{p.layer}.{p.table_name}" for p in judged})
    # the newest window + 1 profiles, and every one at the UTC hour of a judged profile on earlier days (the
    # time-of-day baseline needs SEASONAL_DAYS of them, older than the newest window)
    hours = sorted({p.profiled_at.astimezone(UTC).hour for p in judged})
    rows = con.execute(
        """SELECT layer, table_name, column_name, profiled_at, row_count, null_fraction, mean, stddev
        FROM cdcwh.column_profiles
        WHERE row_count >= ? AND profiled_at >= ? AND list_contains(?, layer || '.' || table_name)
        QUALIFY row_number() OVER (PARTITION BY layer, table_name, column_name ORDER BY profiled_at DESC) <= ?
            OR list_contains(?, hour(timezone('UTC', profiled_at)))
        ORDER BY profiled_at""",
        [MIN_PROFILE_ROWS, since, tables, audit.anomaly_window + 1, hours],
    ).fetchall()
    history: dict[tuple[str, str, str], list[Measured]] = defaultdict(list)
    for layer, table, column, at, n, nulls, mean, spread in rows:
        history[(str(layer), str(table), str(column))].append(
            (at.astimezone(UTC), int(n), nulls, mean, spread)
        )
    found = []
    for profile in judged:
        past = [
            h
            for h in history[(profile.layer, profile.table_name, profile.column_name)]
            if h[0] <= profile.profiled_at
        ]
        name = f"{profile.layer}.{profile.table_name}"
        nulls = [Point(at, float(v), n) for at, n, v, _, _ in past if v is not None]
        means = [Point(at, float(v), n, spread) for at, n, _, v, spread in past if v is not None]
        for signal, series in (("null_fraction", nulls), ("mean", means)):
            if series and series[-1].at == profile.profiled_at:
                anomaly = _judge(signal, series, audit)
                if anomaly is not None:
                    found.append((name, profile.column_name, anomaly))
    return found


def record_anomalies(
    con: duckdb.DuckDBPyConnection, found: Sequence[tuple[str, str, Anomaly]], now: datetime
) -> int:
    """Keep the anomalies in ``cdcwh.anomalies`` (once per key), count and log the new ones."""
    con.execute(ANOMALIES_TABLE)
    new = 0
    for table, column, a in found:
        inserted = con.execute(
            "INSERT OR IGNORE INTO cdcwh.anomalies (table_name, column_name, signal, observed_at, value, "
            "baseline_median, baseline_mad, score, threshold, detected_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING 1",
            [
                table,
                column,
                a.signal,
                a.at,
                a.value,
                a.baseline.median,
                a.baseline.mad,
                a.score,
                a.threshold,
                now,
            ],
        ).fetchall()
        if inserted:
            new += 1
            metrics.ANOMALIES.labels(table, a.signal).inc()
            log.warning(
                "anomaly: %s%s %s = %g at %s, baseline median %g (MAD %g, %d points%s): %.1f MADs, "
                "threshold %g",
                table,
                f".{column}" if column else "",
                a.signal,
                a.value,
                a.at.isoformat(),
                a.baseline.median,
                a.baseline.mad,
                a.baseline.points,
                ", time of day" if a.baseline.seasonal else "",
                a.score,
                a.threshold,
            )
    return new
