"""The audit schema on the session's PostgreSQL: DDL idempotent, every writer idempotent, the daily_metrics
view, retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from cdcwh.audit.rows import bad_record_rows, landing_rows, run_key
from cdcwh.audit.schema import TABLES, ensure_audit_schema
from cdcwh.audit.writer import PostgresAuditWriter
from cdcwh.core.record import Rejection, RejectReason

DAY = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def writer(dsn: str, schema: str) -> PostgresAuditWriter:
    return PostgresAuditWriter(lambda: dsn, lambda: dsn, schema)


def rows(dsn: str, query: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema))).fetchall()


def sample_rows() -> dict[str, list[tuple[Any, ...]]]:
    rejection = Rejection(
        "shop.public.orders", 1, 42, RejectReason.INVALID_JSON, "bad", b"k", b"{oops", 1_000
    )
    return {
        "pipeline_runs": [
            ("ingest", "a", DAY, DAY, "ok", 10, 9, None),
            ("transform", "1@x", DAY, DAY, "ok", 9, 4, None),
            ("transform", "2@x", DAY, DAY, "failed", 3, 0, "boom"),
            ("sink", "b", DAY + timedelta(days=1), DAY + timedelta(days=1), "ok", 4, 4, None),
        ],
        "dq_results": [
            (
                "batch:1",
                "orders.unique.order_id",
                1,
                "orders",
                "order_id",
                "unique",
                "error",
                "fail",
                2,
                Jsonb([{"order_id": 1}]),
                "batch",
                DAY,
            ),
            (
                "batch:1",
                "orders.not_null.status",
                1,
                "orders",
                "status",
                "not_null",
                "warn",
                "warn",
                1,
                Jsonb([]),
                "batch",
                DAY,
            ),
            (
                "batch:1",
                "orders.accepted.status",
                1,
                "orders",
                "status",
                "accepted_values",
                "error",
                "pass",
                0,
                Jsonb([]),
                "batch",
                DAY,
            ),
        ],
        "bad_records": bad_record_rows([rejection], DAY),
        "column_profiles": [
            ("silver", "orders", "status", DAY, 1, 10, 0.1, 3, "a", "c", None, None, Jsonb(["a", "b", "c"])),
        ],
        "anomalies": [("silver.orders", "", "volume", DAY, 0.0, 600.0, 20.0, -20.2, 6.0, DAY)],
    }


def test_ddl_is_idempotent(postgres_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        ensure_audit_schema(conn, pg_schema)
        ensure_audit_schema(conn, pg_schema)
    with psycopg.connect(postgres_dsn) as conn:
        tables = conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            (pg_schema,),
        ).fetchall()
    # the API's api_access is one of the audit tables too (its DDL is in cdcwh.audit.api_access)
    expected = [(name, "BASE TABLE") for name in [*TABLES, "api_access"]] + [("daily_metrics", "VIEW")]
    assert tables == sorted(expected)


def test_every_writer_is_idempotent_and_daily_metrics_counts(postgres_dsn: str, pg_schema: str) -> None:
    audit = writer(postgres_dsn, pg_schema)
    first = audit.write(sample_rows())
    again = audit.write(sample_rows())  # a replayed batch, a redone landing: nothing new
    audit.close()
    assert (first, again) == (4 + 3 + 1 + 1 + 1, 0)
    for table in TABLES:
        assert rows(postgres_dsn, f"SELECT count(*) FROM {{s}}.{table}", pg_schema)[0][0] == len(
            sample_rows()[table]
        )
    assert rows(
        postgres_dsn,
        'SELECT topic, "partition", "offset", reason, value_preview FROM {s}.bad_records',
        pg_schema,
    ) == [("shop.public.orders", 1, 42, "invalid_json", "{oops")]
    metrics = rows(
        postgres_dsn,
        "SELECT day, bronze_rows, silver_rows, gold_changes, mart_rows, runs, failed_runs, quarantined, "
        "dq_failures, dq_warnings, anomalies FROM {s}.daily_metrics ORDER BY day",
        pg_schema,
    )
    assert metrics == [
        (DAY.date(), 9, 12, 4, 0, 3, 1, 1, 1, 1, 1),
        ((DAY + timedelta(days=1)).date(), 0, 0, 0, 4, 1, 0, 0, 0, 0, 0),
    ]


def test_retention_prunes_old_rows_only(postgres_dsn: str, pg_schema: str) -> None:
    audit = writer(postgres_dsn, pg_schema)
    now = datetime.now(UTC)
    audit.write(
        {
            "pipeline_runs": [
                ("ingest", "old", now - timedelta(days=10), now, "ok", 1, 1, None),
                ("ingest", "new", now - timedelta(days=2), now, "ok", 1, 1, None),
            ]
        }
    )
    deleted = audit.prune(retention_days=5)
    audit.close()
    assert deleted["pipeline_runs"] == 1
    assert rows(postgres_dsn, "SELECT run_key FROM {s}.pipeline_runs", pg_schema) == [("new",)]


def test_a_landing_consumed_again_keeps_its_key_and_a_pure_redo_adds_nothing() -> None:
    offsets = [("t", 0, 5), ("t", 0, 9), ("t", 1, 3)]
    assert run_key(offsets) == run_key(list(reversed(offsets)))
    assert run_key(offsets) != run_key([("t", 0, 5), ("t", 0, 10), ("t", 1, 3)])
    assert landing_rows(offsets, rows_in=3, landed=0, rejections=[], started=DAY, finished=DAY) == {}
    landed = landing_rows(offsets, rows_in=3, landed=3, rejections=[], started=DAY, finished=DAY)
    assert landed["pipeline_runs"] == [("ingest", run_key(offsets), DAY, DAY, "ok", 3, 3, None)]


def test_an_insert_only_audit_role_writes_and_the_owner_prunes(postgres_dsn: str, pg_schema: str) -> None:
    """The audit connection needs only INSERT and SELECT (the cdcwh_audit role); retention uses the owner."""
    role = f"r_{pg_schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        ensure_audit_schema(conn, pg_schema)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(pg_schema), sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(pg_schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                sql.Identifier(pg_schema), sql.Identifier(role)
            )
        )
    audit_dsn = psycopg.conninfo.make_conninfo(postgres_dsn, user=role)
    try:
        audit = PostgresAuditWriter(lambda: audit_dsn, lambda: postgres_dsn, pg_schema)
        old = datetime.now(UTC) - timedelta(days=30)
        assert audit.write({"pipeline_runs": [("sink", "old", old, old, "ok", 1, 1, None)]}) == 1
        with psycopg.connect(audit_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(pg_schema, "pipeline_runs")))
        assert audit.prune(retention_days=7)["pipeline_runs"] == 1
        audit.close()
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_known_schema_skips_the_ddl_and_audit_connections_have_timeouts(
    postgres_dsn: str, pg_schema: str
) -> None:
    """A long reader holding the ``daily_metrics`` view (a lock ``CREATE OR REPLACE VIEW`` would wait behind)
    does not stop a second process's first write: the DDL already ran, so it is skipped; and the audit
    connection carries ``statement_timeout`` and ``lock_timeout`` from ``audit.statement_timeout_s``."""
    with psycopg.connect(postgres_dsn) as conn:
        ensure_audit_schema(conn, pg_schema)
    blocker = psycopg.connect(postgres_dsn)
    release = threading.Timer(30, blocker.close)  # without the skip, the write below waits for this
    release.start()
    try:
        blocker.execute(
            sql.SQL("SELECT * FROM {}").format(sql.Identifier(pg_schema, "daily_metrics"))
        ).fetchall()  # a reader of the view with its transaction open: it holds the view's lock
        audit = PostgresAuditWriter(
            lambda: postgres_dsn, lambda: postgres_dsn, pg_schema, statement_timeout_s=2.5
        )
        assert audit.write({"pipeline_runs": [("sink", "k", DAY, DAY, "ok", 1, 1, None)]}) == 1
        assert blocker.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still held
        assert audit._conn is not None
        settings = [
            audit._conn.execute(f"SHOW {name}").fetchone() for name in ("statement_timeout", "lock_timeout")
        ]
        assert settings == [("2500ms",), ("2500ms",)]
        audit.close()
    finally:
        release.cancel()
        blocker.close()
