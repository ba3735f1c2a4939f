"""The transform's audit shipping on a real DuckDB warehouse file and the session's PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from cdcwh.audit import transform as audit_transform
from cdcwh.audit.transform import TransformAudit
from cdcwh.audit.writer import PostgresAuditWriter
from cdcwh.config import Settings
from cdcwh.quality.anomalies import ANOMALIES_TABLE, ANOMALY_MINUTE
from cdcwh.quality.profile import PROFILES_TABLE
from cdcwh.quality.results import RESULTS_TABLE
from cdcwh.warehouse import open_warehouse, read_state
from tests.support.metrics import counter_total

WRITTEN = "cdcwh_audit_rows_written_total"
FAILURES = "cdcwh_audit_write_failures_total"
AT = datetime(2026, 3, 2, 12, tzinfo=UTC)


def pg_count(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_dq_results_sharing_one_instant_ship_once_each(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven results of one ``ran_at`` shipped in chunks of three: all arrive, and shipping again sends and
    counts nothing."""
    monkeypatch.setattr(audit_transform, "SHIP_CHUNK", 3)
    settings = Settings(data_dir=tmp_path / "data")
    writer = PostgresAuditWriter(lambda: postgres_dsn, lambda: postgres_dsn, pg_schema)
    audit = TransformAudit(settings, writer)
    con = open_warehouse(settings)
    try:
        for ddl in (RESULTS_TABLE, PROFILES_TABLE, ANOMALIES_TABLE):
            con.execute(ddl)
        for i in range(7):
            con.execute(
                "INSERT INTO cdcwh.dq_results VALUES "
                "(?, 1, ?, 'm', NULL, 'unique', 'error', 'pass', 0, '[]', 'batch', ?)",
                [f"batch:{i % 2}", f"m.unique.{i}", AT],
            )
        written = counter_total(WRITTEN, service="transform", table="dq_results")
        assert audit.ship(con) == 7
        assert pg_count(postgres_dsn, pg_schema, "dq_results") == 7
        assert counter_total(WRITTEN, service="transform", table="dq_results") == written + 7
        assert audit.ship(con) == 0
        assert counter_total(WRITTEN, service="transform", table="dq_results") == written + 7
    finally:
        con.close()
        writer.close()


def test_after_batch_never_raises_and_close_drops_the_connection(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    """A shipping failure that is no database error (a DSN that cannot be resolved) is counted, not raised;
    ``close`` closes the connection a working shipping opened."""
    settings = Settings(data_dir=tmp_path / "data")
    dsn: list[str | None] = [None]

    def resolve() -> str:
        if dsn[0] is None:
            raise RuntimeError("no DSN yet")
        return dsn[0]

    writer = PostgresAuditWriter(resolve, resolve, pg_schema)
    audit = TransformAudit(settings, writer)
    con = open_warehouse(settings)
    try:
        con.execute(RESULTS_TABLE)
        con.execute(
            "INSERT INTO cdcwh.dq_results VALUES "
            "('batch:1', 1, 'm.unique', 'm', NULL, 'unique', 'error', 'pass', 0, '[]', 'batch', ?)",
            [AT],
        )
        failures = counter_total(FAILURES, service="transform", table="all")
        audit.after_batch(con, 1)
        assert counter_total(FAILURES, service="transform", table="all") == failures + 1
        dsn[0] = postgres_dsn
        audit._next_ship = 0.0
        audit.after_batch(con, 1)
        assert pg_count(postgres_dsn, pg_schema, "dq_results") == 1
        connection = writer._conn
        assert connection is not None and not connection.closed
        audit.close()
        assert connection.closed
    finally:
        con.close()


def test_judged_minutes_move_only_with_their_anomalies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When storing the anomalies fails, the minutes just judged are not marked judged: a later profiling
    judges them again instead of skipping them."""
    settings = Settings(data_dir=tmp_path / "data", audit={"enabled": False})
    audit = TransformAudit(settings)

    def failing(*args: object) -> int:
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(audit_transform, "record_anomalies", failing)
    con = open_warehouse(settings)
    try:
        with pytest.raises(duckdb.IOException):
            audit.profile(con, None)
        assert read_state(con, ANOMALY_MINUTE) is None
        monkeypatch.undo()
        audit.profile(con, None)
        assert read_state(con, ANOMALY_MINUTE) is not None
    finally:
        con.close()


def test_gold_models_are_profiled_on_their_own_interval(tmp_path: Path) -> None:
    """Profiling after every batch, gold at most hourly: two profilings profile the gold model once."""
    settings = Settings(
        data_dir=tmp_path / "data",
        audit={"enabled": False, "profile_interval_s": 0, "gold_profile_interval_s": 3600},
    )
    audit = TransformAudit(settings)
    con = open_warehouse(settings)
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS gold")
        con.execute("CREATE TABLE gold.totals AS SELECT range AS id, range % 7 AS amount FROM range(100)")
        audit.after_batch(con, 1)
        audit.after_batch(con, 2)
        profiled = con.execute(
            "SELECT column_name, count(*) FROM cdcwh.column_profiles WHERE layer = 'gold' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert profiled == [("amount", 1), ("id", 1)]
    finally:
        con.close()
