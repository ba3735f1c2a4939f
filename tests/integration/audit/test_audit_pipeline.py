"""The audit schema filled by a small real pipeline (broker, Iceberg, DuckDB, PostgreSQL; services
in-process): runs of ingest, transform and sink, a quarantined record mirrored, data quality results shipped
from the warehouse, profiles; and a PostgreSQL that is unreachable stops nothing, its rows arriving later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator
from cdcwh.warehouse import open_warehouse
from tests.support.kafka_readback import read_to_end
from tests.support.pipeline import (
    env_overrides,
    quarantine,
    run_ingest_until_caught_up,
    run_sink_until_caught_up,
    settings_for,
)
from tests.support.warehouse import produce_changes, run_transform_once

UNREACHABLE = "postgresql://cdcwh@127.0.0.1:1/cdcwh"


@pytest.fixture
def audit_schema(postgres_dsn: str, pg_schema: str) -> Iterator[str]:
    name = f"{pg_schema}_audit"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def audited(base: Settings, dsn: str, marts: str, audit: str, **extra: str) -> Settings:
    return env_overrides(
        base,
        CDCWH_POSTGRES__DSN=dsn,
        CDCWH_POSTGRES__SCHEMA=marts,
        CDCWH_POSTGRES__AUDIT_SCHEMA=audit,
        CDCWH_AUDIT__ENABLED="true",
        **extra,
    )


def fetch(dsn: str, schema: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()


def test_a_pipeline_run_fills_the_audit_schema_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    unique_prefix: str,
    postgres_dsn: str,
    pg_schema: str,
    audit_schema: str,
) -> None:
    settings = audited(
        settings_for(tmp_path / "data", kafka_bootstrap, unique_prefix), postgres_dsn, pg_schema, audit_schema
    )
    produce_changes(kafka_bootstrap, unique_prefix, list(ShopGenerator(3).changes(300)))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(f"{unique_prefix}.public.orders", key=b'{"id": 1}', value=b"{not json", partition=0)
    assert producer.flush(10) == 0
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    run_sink_until_caught_up(settings)

    runs = fetch(
        postgres_dsn, audit_schema, "SELECT service, status, rows_in, rows_out FROM {s}.pipeline_runs"
    )
    assert {service for service, *_ in runs} == {"ingest", "transform", "sink"}
    # every record consumed by ingest: 300 changes (plus their tombstones) and the bad one
    consumed = sum(rows_in for service, _, rows_in, _ in runs if service == "ingest")
    con = open_warehouse(settings, read_only=True)
    batches = con.execute(
        "SELECT count(*), sum(bronze_rows), sum(gold_changes) FROM cdcwh.batches"
    ).fetchall()[0]
    con.close()
    transform = [(rows_in, rows_out) for service, _, rows_in, rows_out in runs if service == "transform"]
    assert (len(transform), sum(i for i, _ in transform), sum(o for _, o in transform)) == batches
    # counted from the topics themselves: every record produced (the bad one included) and every gold change
    produced = [
        m
        for m in read_to_end(kafka_bootstrap, prefix=f"{unique_prefix}.public.")
        if not m.topic().endswith(".dlq")
    ]
    assert consumed == len(produced) >= 301
    gold = read_to_end(kafka_bootstrap, prefix=settings.kafka.gold_topic_prefix)
    sink = [(rows_in, rows_out) for service, _, rows_in, rows_out in runs if service == "sink"]
    assert sum(i for i, _ in sink) == len(gold) > 0
    # rows_out: the upserts and deletes attempted, one per mart key and batch (the newest change of a key in a
    # batch wins): at least one per key changed, at most one per change
    keys = {(m.topic(), m.key()) for m in gold}
    assert len(keys) <= sum(o for _, o in sink) <= len(gold)
    assert all(o <= i for i, o in sink)

    quarantined = quarantine(settings).to_pylist()
    assert len(quarantined) == 1
    bad = fetch(
        postgres_dsn, audit_schema, 'SELECT topic, "partition", "offset", reason FROM {s}.bad_records'
    )
    record = quarantined[0]
    assert bad == [(record["topic"], record["partition"], record["offset"], "invalid_json")]

    profiled = fetch(postgres_dsn, audit_schema, "SELECT DISTINCT layer, table_name FROM {s}.column_profiles")
    assert {("silver", "orders"), ("gold", "orders")} <= set(profiled)

    # the data quality results the transform recorded in the warehouse are mirrored, each once
    def warehouse_results() -> list[tuple[object, ...]]:
        con = open_warehouse(settings, read_only=True)
        try:
            rows = con.execute(
                "SELECT run_id, test_id, status, failing_rows FROM cdcwh.dq_results ORDER BY ALL"
            ).fetchall()
        finally:
            con.close()
        return [tuple(row) for row in rows]

    recorded = warehouse_results()
    assert any(run_id == "batch:1" for run_id, *_ in recorded)  # the first batch ran its tests
    run_transform_once(settings)  # ships what the last step recorded
    run_transform_once(settings)  # shipping again adds nothing
    mirrored = fetch(
        postgres_dsn,
        audit_schema,
        "SELECT run_id, test_id, status, failing_rows FROM {s}.dq_results ORDER BY run_id, test_id",
    )
    assert sorted(mirrored) == sorted(warehouse_results())
    assert len(mirrored) == len({(run_id, test_id) for run_id, test_id, *_ in mirrored})
    again = fetch(postgres_dsn, audit_schema, "SELECT count(*) FROM {s}.pipeline_runs")[0][0]
    assert again == len(runs)


def test_an_unreachable_audit_postgres_stops_nothing_and_its_rows_arrive_later(
    tmp_path: Path,
    kafka_bootstrap: str,
    unique_prefix: str,
    postgres_dsn: str,
    pg_schema: str,
    audit_schema: str,
) -> None:
    base = settings_for(tmp_path / "data", kafka_bootstrap, unique_prefix)
    down = audited(
        base,
        postgres_dsn,
        pg_schema,
        audit_schema,
        CDCWH_POSTGRES__AUDIT_DSN=UNREACHABLE,
        CDCWH_POSTGRES__OWNER_DSN=UNREACHABLE,
    )
    produce_changes(kafka_bootstrap, unique_prefix, list(ShopGenerator(4).changes(200)))
    run_ingest_until_caught_up(down)
    run_transform_once(down)
    con = open_warehouse(down, read_only=True)
    batches = con.execute("SELECT batch_id FROM cdcwh.batches ORDER BY 1").fetchall()
    orders = con.execute("SELECT count(*) FROM silver.orders").fetchall()[0][0]
    con.close()
    assert batches and orders > 0, "the transform went on without its audit PostgreSQL"
    with psycopg.connect(postgres_dsn) as conn:
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (audit_schema,)).fetchall()
    assert exists == []

    up = audited(base, postgres_dsn, pg_schema, audit_schema)
    run_transform_once(up)  # nothing new in bronze: the step ships what the warehouse kept
    shipped = fetch(
        postgres_dsn, audit_schema, "SELECT run_key FROM {s}.pipeline_runs WHERE service = 'transform'"
    )
    assert sorted(int(key.split("@")[0]) for (key,) in shipped) == [b for (b,) in batches]
