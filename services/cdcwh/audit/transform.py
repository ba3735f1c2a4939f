"""The transform's audit work after each committed batch: profile, detect anomalies, ship, prune.

``TransformAudit.after_batch(con)`` runs on the open warehouse file, after the batch committed and its
changes were published. It never raises and never waits for PostgreSQL:

1. every ``audit.profile_interval_s``: profile the silver tables (and, every
   ``audit.gold_profile_interval_s``, the gold models: ``quality/profile.py``) and judge the new profiles
   and the complete minutes of volume (by source commit time) and freshness (``quality/anomalies.py``);
   both kept in the warehouse file;
2. ship what DuckDB recorded and PostgreSQL lacks: ``cdcwh.batches`` above the shipped batch id
   (``cdcwh.state`` ``audit_batch``) as ``pipeline_runs``; ``cdcwh.dq_results`` after the last shipped
   ``(ran_at, run_id, test_id)`` (``cdcwh.audit_dq_mark``, a keyset: every row once, however many share an
   instant); the profiles and anomalies not marked ``shipped``. The watermarks move only after PostgreSQL
   committed, so rows recorded while it was unreachable are shipped by a later batch: nothing is lost.
   After a failure, shipping waits ``audit.retry_s``;
3. every ``audit.prune_interval_s``: delete audit rows older than ``audit.retention_days``, in PostgreSQL
   and in the warehouse's profile and anomaly tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import duckdb
from psycopg.types.json import Jsonb

from cdcwh import metrics
from cdcwh.audit.writer import PostgresAuditWriter, audit_enabled
from cdcwh.config import Settings
from cdcwh.quality.anomalies import (
    ANOMALIES_TABLE,
    freshness_anomalies,
    profile_anomalies,
    record_anomalies,
    volume_anomalies,
)
from cdcwh.quality.profile import PROFILE_COLUMNS, PROFILES_TABLE, profile_all
from cdcwh.warehouse import count, read_state, table_exists, write_state

log = logging.getLogger(__name__)

SHIPPED_BATCH: Final = "audit_batch"
SHIPPED_DQ_AT: Final = "audit_dq_at"  # the watermark before the keyset (microseconds), read once to migrate
DQ_MARK_TABLE: Final = """
CREATE TABLE IF NOT EXISTS cdcwh.audit_dq_mark (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    ran_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    test_id VARCHAR NOT NULL
)
"""
DQMark = tuple[datetime, str, str]
SHIP_CHUNK: Final = 10_000
ANOMALY_COLUMNS: Final = (
    "table_name, column_name, signal, observed_at, value, baseline_median, baseline_mad, score, threshold, "
    "detected_at"
)
DQ_COLUMNS: Final = (
    "run_id, test_id, batch_id, model, column_name, test, severity, status, failing_rows, sample, scope, "
    "ran_at"
)


class TransformAudit:
    def __init__(
        self,
        settings: Settings,
        writer: PostgresAuditWriter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.audit = settings.audit
        if writer is None and audit_enabled(settings):
            writer = PostgresAuditWriter.from_settings(settings)
        self.writer = writer
        self.clock = clock
        self._next_profile = 0.0
        self._next_gold_profile = 0.0
        self._next_ship = 0.0
        self._next_prune = 0.0

    def after_batch(self, con: duckdb.DuckDBPyConnection, batch_id: int | None) -> None:
        """Profile, detect, ship and prune as due; logs and counts its failures, never raises them (any
        ``Exception``: the batch is committed, and the transform must go on to release the file)."""
        try:
            con.execute(PROFILES_TABLE)
            con.execute(ANOMALIES_TABLE)
            if time.monotonic() >= self._next_profile:
                self._next_profile = time.monotonic() + self.audit.profile_interval_s
                self.profile(con, batch_id)
        except Exception as exc:
            metrics.ERRORS.labels("transform", "profile").inc()
            log.warning("profiling or anomaly detection failed, tried again later: %s", exc)
        if self.writer is not None and time.monotonic() >= self._next_ship:
            try:
                self.ship(con)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self.backlog(con)
                self._next_ship = time.monotonic() + self.audit.retry_s
                metrics.AUDIT_WRITE_FAILURES.labels("transform", "all").inc()
                log.warning(
                    "audit: shipping to PostgreSQL failed (%s); the rows stay in the warehouse file, retried "
                    "in %.0fs",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    self.audit.retry_s,
                )
        if time.monotonic() >= self._next_prune:
            try:
                self.prune(con)
                self._next_prune = time.monotonic() + self.audit.prune_interval_s
            except Exception as exc:
                self._next_prune = time.monotonic() + self.audit.retry_s
                metrics.ERRORS.labels("transform", "audit_prune").inc()
                log.warning("audit: pruning failed, tried again later: %s", exc)

    def close(self) -> None:
        """Close the audit connection to PostgreSQL (opened again by the next shipping)."""
        if self.writer is not None:
            self.writer.close()

    def profile(self, con: duckdb.DuckDBPyConnection, batch_id: int | None) -> int:
        """Profile everything, judge; the number of new anomalies."""
        started = time.monotonic()
        now = self.clock()
        gold = time.monotonic() >= self._next_gold_profile
        profiles = profile_all(con, at=now, batch_id=batch_id, gold=gold)
        if gold:
            self._next_gold_profile = time.monotonic() + self.audit.gold_profile_interval_s
        metrics.PROFILE_DURATION.observe(time.monotonic() - started)
        found = profile_anomalies(con, profiles, self.audit)
        # the judged minutes move with the anomalies found in them: both or neither (judged again next time)
        con.execute("BEGIN")
        try:
            found += volume_anomalies(con, self.audit) + freshness_anomalies(con, now, self.audit)
            new = record_anomalies(con, found, now)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return new

    def ship(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write what PostgreSQL lacks; the number of rows sent."""
        assert self.writer is not None  # noqa: S101 - after_batch checks
        sent = 0
        while True:  # batches, then dq results, in chunks
            runs, last_batch = self._runs(con)
            dq, last_dq = self._dq_results(con)
            if not runs and not dq:
                break
            inserted = self.writer.insert({"pipeline_runs": runs, "dq_results": dq})
            if last_batch is not None:
                write_state(con, SHIPPED_BATCH, last_batch)
            if last_dq is not None:
                con.execute("INSERT OR REPLACE INTO cdcwh.audit_dq_mark VALUES (true, ?, ?, ?)", [*last_dq])
            sent += len(runs) + len(dq)
            self._count("pipeline_runs", inserted.get("pipeline_runs", 0))
            self._count("dq_results", inserted.get("dq_results", 0))
            if len(runs) < SHIP_CHUNK and len(dq) < SHIP_CHUNK:
                break
        for table, columns in (("column_profiles", PROFILE_COLUMNS), ("anomalies", ANOMALY_COLUMNS)):
            rows = con.execute(f"SELECT {columns} FROM cdcwh.{table} WHERE NOT shipped").fetchall()  # noqa: S608 - constant names
            if table == "column_profiles":
                rows = [(*r[:-1], None if r[-1] is None else Jsonb(json.loads(r[-1]))) for r in rows]
            if rows:
                inserted = self.writer.insert({table: rows})
                con.execute(f"UPDATE cdcwh.{table} SET shipped = true WHERE NOT shipped")  # noqa: S608 - constant names
                sent += len(rows)
                self._count(table, inserted.get(table, 0))
        self.backlog(con)
        return sent

    def backlog(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """Rows recorded in DuckDB and not shipped yet, per audit table (also set as a gauge)."""
        shipped = read_state(con, SHIPPED_BATCH) or 0
        counts = {
            "pipeline_runs": count(con, "SELECT count(*) FROM cdcwh.batches WHERE batch_id > ?", [shipped]),
            "column_profiles": count(con, "SELECT count(*) FROM cdcwh.column_profiles WHERE NOT shipped"),
            "anomalies": count(con, "SELECT count(*) FROM cdcwh.anomalies WHERE NOT shipped"),
        }
        for table, n in counts.items():
            metrics.AUDIT_BACKLOG.labels(table).set(n)
        return counts

    def _count(self, table: str, n: int) -> None:
        if n:
            metrics.AUDIT_ROWS_WRITTEN.labels("transform", table).inc(n)

    def _runs(self, con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], int | None]:
        shipped = read_state(con, SHIPPED_BATCH) or 0
        rows = con.execute(
            "SELECT batch_id, started_at, ended_at, status, error, bronze_rows, gold_changes "
            "FROM cdcwh.batches WHERE batch_id > ? ORDER BY batch_id LIMIT ?",
            [shipped, SHIP_CHUNK],
        ).fetchall()
        runs = [
            (
                "transform",
                f"{batch_id}@{started.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}",
                started,
                ended,
                status,
                rows_in,
                rows_out,
                error,
            )
            for batch_id, started, ended, status, error, rows_in, rows_out in rows
        ]
        return runs, (int(rows[-1][0]) if rows else None)

    def _dq_results(self, con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], DQMark | None]:
        if not table_exists(con, "cdcwh", "dq_results"):
            return [], None
        con.execute(DQ_MARK_TABLE)
        mark = con.execute("SELECT ran_at, run_id, test_id FROM cdcwh.audit_dq_mark").fetchone()
        if mark is None:  # never shipped, or shipped up to an instant by an earlier version: that one again
            since = read_state(con, SHIPPED_DQ_AT)
            mark = (datetime.fromtimestamp((since or 0) / 1_000_000, UTC) - timedelta(microseconds=1), "", "")
        rows = con.execute(
            f"SELECT {DQ_COLUMNS} FROM cdcwh.dq_results "  # noqa: S608 - constant names
            "WHERE ran_at > ? OR (ran_at = ? AND (run_id > ? OR (run_id = ? AND test_id > ?))) "
            "ORDER BY ran_at, run_id, test_id LIMIT ?",
            [mark[0], mark[0], mark[1], mark[1], mark[2], SHIP_CHUNK],
        ).fetchall()
        results = [(*row[:9], Jsonb(json.loads(row[9])), *row[10:]) for row in rows]
        if not rows:
            return [], None
        last = rows[-1]
        return results, (last[11], last[0], last[1])

    def prune(self, con: duckdb.DuckDBPyConnection) -> None:
        cutoff = self.clock() - timedelta(days=self.audit.retention_days)
        # shipped rows only while the audit is on: the others wait for PostgreSQL
        shipped = "shipped" if self.writer is not None else "true"
        con.execute(f"DELETE FROM cdcwh.column_profiles WHERE profiled_at < ? AND {shipped}", [cutoff])  # noqa: S608
        con.execute(f"DELETE FROM cdcwh.anomalies WHERE observed_at < ? AND {shipped}", [cutoff])  # noqa: S608
        if self.writer is not None:
            deleted = self.writer.prune(self.audit.retention_days)
            if any(deleted.values()):
                log.info("audit: pruned rows older than %d days: %s", self.audit.retention_days, deleted)
