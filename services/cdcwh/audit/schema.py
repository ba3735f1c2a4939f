"""The audit schema in PostgreSQL (``postgres.audit_schema``, default ``audit``): tables, view, pruning.

Every table has a natural key and every write is ``INSERT ... ON CONFLICT DO NOTHING`` (``writer.py``), so a
replayed batch, a redone landing or a second shipment of the same rows never duplicates one:

- ``pipeline_runs``: one row per batch of a service, keyed ``(service, run_key)``;
- ``dq_results``: a mirror of the warehouse's ``cdcwh.dq_results``, keyed ``(run_id, test_id)``;
- ``bad_records``: quarantined records, keyed ``(topic, partition, offset)``;
- ``column_profiles``: keyed ``(layer, table_name, column_name, profiled_at)``;
- ``anomalies``: keyed ``(table_name, column_name, signal, observed_at)``;
- ``daily_metrics``: a view of rows per layer, quarantined records, DQ failures and anomalies per UTC day.

The DDL runs through the ``owner`` connection (``postgres.owner_dsn``) before a process's first write, and
only when the schema's comment does not name this version of it; the writes use the ``audit`` connection.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import psycopg
from psycopg import sql

TABLES: Final[dict[str, tuple[str, ...]]] = {
    "pipeline_runs": (
        "service",
        "run_key",
        "started_at",
        "finished_at",
        "status",
        "rows_in",
        "rows_out",
        "error",
    ),
    "dq_results": (
        "run_id",
        "test_id",
        "batch_id",
        "model",
        "column_name",
        "test",
        "severity",
        "status",
        "failing_rows",
        "sample",
        "scope",
        "ran_at",
    ),
    "bad_records": (
        "topic",
        "partition",
        "offset",
        "reason",
        "detail",
        "kafka_ts",
        "quarantined_at",
        "value_bytes",
        "value_preview",
    ),
    "column_profiles": (
        "layer",
        "table_name",
        "column_name",
        "profiled_at",
        "batch_id",
        "row_count",
        "null_fraction",
        "distinct_estimate",
        "min_value",
        "max_value",
        "mean",
        "stddev",
        "top_values",
    ),
    "anomalies": (
        "table_name",
        "column_name",
        "signal",
        "observed_at",
        "value",
        "baseline_median",
        "baseline_mad",
        "score",
        "threshold",
        "detected_at",
    ),
}
"""Each audit table's columns, in the order the writers give their values."""

TIME_COLUMNS: Final[dict[str, str]] = {
    "pipeline_runs": "started_at",
    "dq_results": "ran_at",
    "bad_records": "quarantined_at",
    "column_profiles": "profiled_at",
    "anomalies": "observed_at",
}
"""The column retention prunes each table by."""

DDL: Final = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.pipeline_runs (
    id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    service text NOT NULL,
    run_key text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    rows_in bigint,
    rows_out bigint,
    error text,
    PRIMARY KEY (service, run_key)
);
CREATE TABLE IF NOT EXISTS {schema}.dq_results (
    run_id text NOT NULL,
    test_id text NOT NULL,
    batch_id bigint,
    model text NOT NULL,
    column_name text,
    test text NOT NULL,
    severity text NOT NULL,
    status text NOT NULL,
    failing_rows bigint NOT NULL,
    sample jsonb NOT NULL,
    scope text NOT NULL,
    ran_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, test_id)
);
CREATE TABLE IF NOT EXISTS {schema}.bad_records (
    topic text NOT NULL,
    "partition" integer NOT NULL,
    "offset" bigint NOT NULL,
    reason text NOT NULL,
    detail text,
    kafka_ts timestamptz,
    quarantined_at timestamptz NOT NULL,
    value_bytes integer,
    value_preview text,
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE TABLE IF NOT EXISTS {schema}.column_profiles (
    layer text NOT NULL,
    table_name text NOT NULL,
    column_name text NOT NULL,
    profiled_at timestamptz NOT NULL,
    batch_id bigint,
    row_count bigint NOT NULL,
    null_fraction double precision,
    distinct_estimate bigint,
    min_value text,
    max_value text,
    mean double precision,
    stddev double precision,
    top_values jsonb,
    PRIMARY KEY (layer, table_name, column_name, profiled_at)
);
CREATE TABLE IF NOT EXISTS {schema}.anomalies (
    table_name text NOT NULL,
    column_name text NOT NULL,
    signal text NOT NULL,
    observed_at timestamptz NOT NULL,
    value double precision NOT NULL,
    baseline_median double precision NOT NULL,
    baseline_mad double precision NOT NULL,
    score double precision NOT NULL,
    threshold double precision NOT NULL,
    detected_at timestamptz NOT NULL,
    PRIMARY KEY (table_name, column_name, signal, observed_at)
);
CREATE INDEX IF NOT EXISTS pipeline_runs_started ON {schema}.pipeline_runs (started_at);
CREATE INDEX IF NOT EXISTS dq_results_ran ON {schema}.dq_results (ran_at);
CREATE INDEX IF NOT EXISTS bad_records_quarantined ON {schema}.bad_records (quarantined_at);
CREATE INDEX IF NOT EXISTS column_profiles_profiled ON {schema}.column_profiles (profiled_at);
CREATE INDEX IF NOT EXISTS anomalies_observed ON {schema}.anomalies (observed_at);
CREATE OR REPLACE VIEW {schema}.daily_metrics AS
SELECT day,
    coalesce(sum(n) FILTER (WHERE metric = 'bronze_rows'), 0)::bigint AS bronze_rows,
    coalesce(sum(n) FILTER (WHERE metric = 'silver_rows'), 0)::bigint AS silver_rows,
    coalesce(sum(n) FILTER (WHERE metric = 'gold_changes'), 0)::bigint AS gold_changes,
    coalesce(sum(n) FILTER (WHERE metric = 'mart_rows'), 0)::bigint AS mart_rows,
    coalesce(sum(n) FILTER (WHERE metric = 'runs'), 0)::bigint AS runs,
    coalesce(sum(n) FILTER (WHERE metric = 'failed_runs'), 0)::bigint AS failed_runs,
    coalesce(sum(n) FILTER (WHERE metric = 'quarantined'), 0)::bigint AS quarantined,
    coalesce(sum(n) FILTER (WHERE metric = 'dq_failures'), 0)::bigint AS dq_failures,
    coalesce(sum(n) FILTER (WHERE metric = 'dq_warnings'), 0)::bigint AS dq_warnings,
    coalesce(sum(n) FILTER (WHERE metric = 'anomalies'), 0)::bigint AS anomalies
FROM (
    SELECT (started_at AT TIME ZONE 'UTC')::date AS day, m.metric, m.n
    FROM {schema}.pipeline_runs
    CROSS JOIN LATERAL (VALUES
        ('bronze_rows', CASE WHEN service = 'ingest' THEN rows_out END),
        ('silver_rows', CASE WHEN service = 'transform' THEN rows_in END),
        ('gold_changes', CASE WHEN service = 'transform' THEN rows_out END),
        ('mart_rows', CASE WHEN service = 'sink' THEN rows_out END),
        ('runs', 1),
        ('failed_runs', CASE WHEN status = 'failed' THEN 1 ELSE 0 END)
    ) AS m(metric, n)
    UNION ALL
    SELECT (quarantined_at AT TIME ZONE 'UTC')::date, 'quarantined', count(*)
    FROM {schema}.bad_records GROUP BY 1
    UNION ALL
    SELECT (ran_at AT TIME ZONE 'UTC')::date,
        CASE status WHEN 'fail' THEN 'dq_failures' ELSE 'dq_warnings' END, count(*)
    FROM {schema}.dq_results WHERE status IN ('fail', 'warn') GROUP BY 1, 2
    UNION ALL
    SELECT (observed_at AT TIME ZONE 'UTC')::date, 'anomalies', count(*) FROM {schema}.anomalies GROUP BY 1
) AS facts
GROUP BY day;
"""


def ddl_marker() -> str:
    """The audit schema's comment once ``DDL`` ran: a digest of it, so that a changed DDL runs again."""
    return f"cdcwh audit DDL {hashlib.sha256(DDL.encode()).hexdigest()[:16]}"


def audit_schema_current(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether this version's DDL already ran on ``schema`` (its comment is ``ddl_marker()``)."""
    row = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    return row is not None and row[0] == ddl_marker()


def ensure_audit_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the audit schema, its tables, indexes and the ``daily_metrics`` view (idempotent; commits).
    Only when this version's DDL has not run yet: ``CREATE OR REPLACE VIEW`` takes a lock that would wait
    behind a long query on the view."""
    if audit_schema_current(conn, schema):
        conn.commit()
        return
    statement = sql.SQL(DDL).format(schema=sql.Identifier(schema))
    with conn.transaction():
        # one at a time: two services starting together would race on CREATE ... IF NOT EXISTS
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cdcwh.audit:{schema}",))
        conn.execute(statement)
        conn.execute(
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(ddl_marker()))
        )


def prune_sql(schema: str, table: str) -> sql.Composed:
    """Delete the rows of ``<schema>.<table>`` older than ``%s`` days (a parameter)."""
    return sql.SQL("DELETE FROM {} WHERE {} < now() - make_interval(days => %s)").format(
        sql.Identifier(schema, table), sql.Identifier(TIME_COLUMNS[table])
    )
