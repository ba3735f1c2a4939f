"""``cdcwh status``: lag per topic-partition, last batches, freshness and quarantine counts.

Read-only: it asks the broker (end offsets, consumer-group offsets), the Iceberg catalog (landed offsets,
quarantine), the DuckDB file (transform watermarks and batches) and PostgreSQL (newest mart write).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_tables, open_catalog
from cdcwh.bronze.offsets import landed_offsets
from cdcwh.config import Settings
from cdcwh.errors import CdcwhError
from cdcwh.kafka import client_config

console = Console()


def end_offsets(consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    ends = {}
    for tp in partitions:
        _low, high = consumer.get_watermark_offsets(tp, timeout=5)
        ends[(tp.topic, tp.partition)] = int(high)
    return ends


def committed(settings: Settings, group: str, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    consumer = Consumer({**client_config(settings), "group.id": group, "enable.auto.commit": False})
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    catalog = open_catalog(settings)
    tables = bronze_tables(catalog, settings.iceberg.namespace)
    landed: dict[tuple[str, int], int] = {}
    for table in tables.values():
        landed.update(landed_offsets(table))
    ends: dict[tuple[str, int], int] = {}
    ingest_committed: dict[tuple[str, int], int] = {}
    try:
        consumer = Consumer({**client_config(settings), "group.id": "cdcwh-status"})
        try:
            metadata = consumer.list_topics(timeout=10).topics
            partitions = [
                TopicPartition(t, p) for t in sorted(tables) if t in metadata for p in metadata[t].partitions
            ]
            ends = end_offsets(consumer, partitions)
        finally:
            consumer.close()
        ingest_committed = committed(settings, f"{settings.kafka.group_prefix}-ingest", partitions)
    except (CdcwhError, KafkaException) as exc:
        # the other layers still have answers: bronze, silver, PostgreSQL and quarantine
        console.print(f"Kafka unavailable ({exc}); showing what bronze and the warehouse hold", markup=False)
        partitions = [TopicPartition(t, p) for t, p in sorted(landed)]
    watermarks, batches, freshness = _warehouse(settings)

    lag = Table(
        "topic", "partition", "end", "ingest committed", "in bronze", "in silver", "behind", title="lag"
    )
    for tp in partitions:
        key = (tp.topic, tp.partition)
        in_bronze = landed.get(key, -1) + 1
        in_silver = watermarks.get(key, -1) + 1
        lag.add_row(
            tp.topic,
            str(tp.partition),
            f"{ends[key]:,}" if key in ends else "-",
            _offset(ingest_committed.get(key)),
            f"{in_bronze:,}",
            f"{in_silver:,}",
            f"{max(0, ends[key] - in_silver):,}" if key in ends else "-",
        )
    console.print(lag)
    console.print(batches)
    console.print(freshness)
    _postgres(settings)
    _quarantine(settings, catalog)
    return 0


def _offset(value: int | None) -> str:
    return "-" if value is None or value < 0 else f"{value:,}"


def _warehouse(settings: Settings) -> tuple[dict[tuple[str, int], int], Any, Any]:
    from cdcwh.warehouse import open_warehouse

    batches = Table(
        "batch",
        "started",
        "ended",
        "status",
        "bronze rows",
        "gold changes",
        "error",
        title="last transform batches",
    )
    freshness = Table("silver table", "newest source commit", "rows", title="silver")
    try:
        # the transform holds the file across busy batches for hold_s and the batch running then
        con = open_warehouse(settings, read_only=True, wait_s=settings.transform.hold_s + 10)
    except CdcwhError as exc:
        batches.add_row("-", "-", "-", str(exc), "", "", "")
        return {}, batches, freshness
    try:
        watermarks = {
            (str(t), int(p)): int(o)
            for t, p, o in con.execute('SELECT topic, "partition", "offset" FROM cdcwh.watermarks').fetchall()
        }
        rows = con.sql(
            "SELECT batch_id, started_at::VARCHAR, ended_at::VARCHAR, status, bronze_rows, gold_changes, "
            "error FROM cdcwh.batches ORDER BY batch_id DESC LIMIT 5"
        ).fetchall()
        for row in rows:
            batches.add_row(*("" if v is None else str(v) for v in row))
        # gold models that failed (or read a mart that did), retried every batch: docs/operations.md
        behind = con.execute(
            """SELECT m, s.value, (SELECT b.error FROM cdcwh.batch_models AS b WHERE b.model = m
                AND b.status <> 'ok' ORDER BY b.batch_id DESC LIMIT 1)
            FROM (SELECT *, substr(name, 13) AS m FROM cdcwh.state) AS s
            WHERE starts_with(s.name, 'gold_behind:') ORDER BY 1"""
        ).fetchall()
        for model, since, error in behind:
            batches.add_row(f"gold.{model}", "", "", f"behind since {since}", "", "", str(error or ""))
        for (name,) in con.execute("SELECT name FROM cdcwh.silver_tables ORDER BY 1").fetchall():
            newest, count = con.execute(
                f'SELECT max(__source_ts)::VARCHAR, count(*) FROM silver."{name}"'
            ).fetchall()[0]
            freshness.add_row(str(name), str(newest), f"{count:,}")
        return watermarks, batches, freshness
    finally:
        con.close()


def _postgres(settings: Settings) -> None:
    import psycopg
    from psycopg import sql

    from cdcwh.embedded import postgres_dsn

    table = Table(
        "mart", "rows", "newest write", "age (s)", title=f"PostgreSQL schema {settings.postgres.schema_}"
    )
    try:
        with psycopg.connect(postgres_dsn(settings), connect_timeout=5) as conn:
            marts = conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name NOT LIKE '\\_%%' ORDER BY 1",
                (settings.postgres.schema_,),
            ).fetchall()
            for (mart,) in marts:
                rows, newest = conn.execute(
                    sql.SQL("SELECT count(*), max(_updated_at) FROM {}").format(
                        sql.Identifier(settings.postgres.schema_, mart)
                    )
                ).fetchall()[0]
                age = "" if newest is None else f"{(datetime.now(UTC) - newest).total_seconds():.1f}"
                table.add_row(mart, f"{rows:,}", str(newest), age)
    except (CdcwhError, psycopg.Error) as exc:
        table.add_row("-", "-", f"unavailable: {exc}", "")
    console.print(table)


def _quarantine(settings: Settings, catalog: Any) -> None:
    from cdcwh.replay.quarantine import reingested

    table = Table("topic", "reason", "outstanding", "re-ingested", title="quarantine")
    counts: Counter[tuple[str, str, bool]] = Counter()
    try:
        rows = (
            catalog.load_table((settings.iceberg.namespace, QUARANTINE_TABLE))
            .scan(selected_fields=("topic", "reason", "partition", "offset"))
            .to_arrow()
        )
    except Exception:  # no quarantine table yet
        rows = None
    if rows is not None and rows.num_rows:
        done = reingested(catalog, settings.iceberg.namespace, rows)
        for topic, reason, partition, offset in zip(
            rows["topic"].to_pylist(),
            rows["reason"].to_pylist(),
            rows["partition"].to_pylist(),
            rows["offset"].to_pylist(),
            strict=True,
        ):
            counts[(topic, reason, (topic, partition, offset) in done)] += 1
    for topic, reason in sorted({(t, r) for t, r, _ in counts}):
        table.add_row(
            topic, reason, f"{counts[(topic, reason, False)]:,}", f"{counts[(topic, reason, True)]:,}"
        )
    if not counts:
        table.add_row("(none)", "", "0", "0")
    console.print(table)
