"""A ``--until-caught-up`` run of ingest or sink whose group has committed every partition to its end returns
without joining the group (a join takes seconds), and one with anything left still consumes it. Real broker,
Iceberg, DuckDB and PostgreSQL; the services run in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from psycopg import sql

from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator
from cdcwh.ingest import service as ingest_service
from cdcwh.sink import service as sink_service
from tests.support.marts import pg_mart_value
from tests.support.pipeline import TABLES, bronze, settings_for
from tests.support.services import ingest_until_caught_up, sink_until_caught_up, transform_once
from tests.support.warehouse import produce_changes


def bronze_rows(settings: Settings, prefix: str) -> int:
    return sum(bronze(settings, f"{prefix}.public.{t}").num_rows for t in TABLES)


def mart_rows(dsn: str, schema: str) -> int:
    return int(pg_mart_value(dsn, schema, "orders", "count(*)"))


def test_a_caught_up_group_is_not_joined_and_new_records_still_are(
    tmp_path: Path,
    kafka_bootstrap: str,
    unique_prefix: str,
    postgres_dsn: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix, schema = unique_prefix, pg_schema
    settings = settings_for(
        tmp_path / "data", kafka_bootstrap, prefix, postgres={"dsn": postgres_dsn, "schema": schema}
    )
    generator = ShopGenerator(21)
    produce_changes(kafka_bootstrap, prefix, list(generator.changes(300)))
    ingest_until_caught_up(settings)
    transform_once(settings)
    sink_until_caught_up(settings)
    landed, sunk = bronze_rows(settings, prefix), mart_rows(postgres_dsn, schema)
    assert landed > 0 and sunk > 0

    joins: list[str] = []
    build_app, subscribe = ingest_service.build_app, Consumer.subscribe

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        joins.append("ingest")
        return build_app(*args, **kwargs)

    class CountedConsumer(Consumer):  # confluent_kafka's Consumer is a C type: subclass to observe it
        def subscribe(self, *args: Any, **kwargs: Any) -> None:
            joins.append("sink")
            subscribe(self, *args, **kwargs)

    monkeypatch.setattr(ingest_service, "build_app", counted_build)
    monkeypatch.setattr(sink_service, "Consumer", CountedConsumer)

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # a start still sets up what it promises
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "dim_date")))
    ingest_until_caught_up(settings)  # nothing new in any source partition
    transform_once(settings)
    sink_until_caught_up(settings)  # nothing new in any gold partition
    assert joins == []
    assert (bronze_rows(settings, prefix), mart_rows(postgres_dsn, schema)) == (landed, sunk)
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.dim_date",)).fetchone() != (None,)

    one = list(generator.changes(1))
    produce_changes(kafka_bootstrap, prefix, one)  # one change: a record or two in one topic's partition
    ingest_until_caught_up(settings)
    assert joins == ["ingest"]
    assert bronze_rows(settings, prefix) == landed + 1 + (one[0].op == "d")  # a delete has its tombstone

    produce_changes(kafka_bootstrap, prefix, list(generator.changes(200)))
    ingest_until_caught_up(settings)
    transform_once(settings)
    sink_until_caught_up(settings)
    assert joins == ["ingest", "ingest", "sink"]
    assert mart_rows(postgres_dsn, schema) >= sunk
