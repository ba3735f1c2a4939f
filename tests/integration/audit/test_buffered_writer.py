"""Ingest's and sink's audit writer on the session's PostgreSQL: while PostgreSQL is unreachable the rows wait
in memory and nothing raises; the next batch after it is back writes them once; rows still pending at stop are
counted as dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import sql

from cdcwh.audit.writer import MAX_PENDING, BufferedAuditWriter, PostgresAuditWriter
from tests.support.metrics import counter_total

FAILURES = "cdcwh_audit_write_failures_total"
DROPPED = "cdcwh_audit_rows_dropped_total"
UNREACHABLE = "postgresql://cdcwh@127.0.0.1:1/cdcwh"
AT = datetime.now(UTC)


def run(key: str) -> dict[str, list[tuple[object, ...]]]:
    return {"pipeline_runs": [("sink", key, AT, AT, "ok", 1, 1, None)]}


def test_rows_wait_while_postgres_is_away_and_arrive_once(postgres_dsn: str, pg_schema: str) -> None:
    dsn = [UNREACHABLE]
    writer = BufferedAuditWriter("sink", PostgresAuditWriter(lambda: dsn[0], lambda: dsn[0], pg_schema), 0)
    failures = counter_total(FAILURES, service="sink", table="pipeline_runs")
    assert writer.record(run("a")) is False
    assert writer.record(run("b")) is False
    assert len(writer.pending["pipeline_runs"]) == 2
    assert counter_total(FAILURES, service="sink", table="pipeline_runs") >= failures + 1
    dsn[0] = postgres_dsn
    assert writer.record(run("c")) is True
    assert writer.record(run("a")) is True  # the same run again: skipped by its key
    with psycopg.connect(postgres_dsn) as conn:
        keys = conn.execute(
            sql.SQL("SELECT run_key FROM {} ORDER BY 1").format(sql.Identifier(pg_schema, "pipeline_runs"))
        ).fetchall()
    assert keys == [("a",), ("b",), ("c",)]
    writer.close()


def test_rows_pending_at_stop_are_counted_as_dropped(pg_schema: str) -> None:
    writer = BufferedAuditWriter(
        "ingest", PostgresAuditWriter(lambda: UNREACHABLE, lambda: UNREACHABLE, pg_schema), 60
    )
    dropped = counter_total(DROPPED, service="ingest", table="pipeline_runs")
    writer.record({"pipeline_runs": [("ingest", k, AT, AT, "ok", 1, 1, None) for k in "xyz"]})
    writer.close()
    assert counter_total(DROPPED, service="ingest", table="pipeline_runs") == dropped + 3


def test_more_than_max_pending_rows_in_one_record_all_arrive(postgres_dsn: str, pg_schema: str) -> None:
    """One landing with more rows than the in-memory cap: PostgreSQL is up, so every row is written."""
    writer = BufferedAuditWriter(
        "ingest", PostgresAuditWriter(lambda: postgres_dsn, lambda: postgres_dsn, pg_schema), 60
    )
    n = MAX_PENDING + 5
    assert writer.record({"pipeline_runs": [("ingest", f"k{i}", AT, AT, "ok", 1, 1, None) for i in range(n)]})
    writer.close()
    with psycopg.connect(postgres_dsn) as conn:
        written = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "pipeline_runs"))
        ).fetchone()
    assert written == (n,)


def test_only_rows_left_after_a_failed_write_are_trimmed(pg_schema: str) -> None:
    writer = BufferedAuditWriter(
        "ingest", PostgresAuditWriter(lambda: UNREACHABLE, lambda: UNREACHABLE, pg_schema), 60
    )
    dropped = counter_total(DROPPED, service="ingest", table="pipeline_runs")
    rows = [("ingest", f"k{i}", AT, AT, "ok", 1, 1, None) for i in range(MAX_PENDING + 3)]
    assert writer.record({"pipeline_runs": rows}) is False
    assert len(writer.pending["pipeline_runs"]) == MAX_PENDING
    assert writer.pending["pipeline_runs"][0][1] == "k3"  # the oldest go first
    assert counter_total(DROPPED, service="ingest", table="pipeline_runs") == dropped + 3


def test_a_row_postgres_refuses_is_dropped_and_counted_the_others_arrive(
    postgres_dsn: str, pg_schema: str
) -> None:
    """A row that breaks a constraint (a NULL status) is not retried forever: it is found among the others,
    dropped and counted; the rest of the batch is written and nothing stays pending."""
    writer = BufferedAuditWriter(
        "sink", PostgresAuditWriter(lambda: postgres_dsn, lambda: postgres_dsn, pg_schema, service="sink"), 60
    )
    dropped = counter_total(DROPPED, service="sink", table="pipeline_runs")
    rows = [("sink", f"k{i}", AT, AT, None if i == 3 else "ok", 1, 1, None) for i in range(6)]
    assert writer.record({"pipeline_runs": rows}) is True
    assert not writer.pending["pipeline_runs"]
    assert counter_total(DROPPED, service="sink", table="pipeline_runs") == dropped + 1
    with psycopg.connect(postgres_dsn) as conn:
        keys = conn.execute(
            sql.SQL("SELECT run_key FROM {} ORDER BY 1").format(sql.Identifier(pg_schema, "pipeline_runs"))
        ).fetchall()
    assert keys == [("k0",), ("k1",), ("k2",), ("k4",), ("k5",)]
    writer.close()
