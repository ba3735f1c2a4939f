"""The sink, ``replay`` and ``status`` each with their own role: the owner creates the marts, the sink writes
them, the reader reads them; a sink whose role lacks a privilege stops at start naming the role, the privilege
and the table. Real broker (the gold feed), real PostgreSQL (the session's, roles unique per test)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.errors import ConfigError
from cdcwh.goldfeed import encode, gold_topic
from cdcwh.overview.status import _postgres as status_marts
from cdcwh.sink.postgres import PostgresMartSink
from tests.integration.postgres.conftest import Roles
from tests.support.pipeline import env_overrides, settings_for
from tests.support.services import sink_until_caught_up

SQL_DIR = PROJECT_ROOT / "sql"
CUSTOMERS = [
    {
        "customer_id": n,
        "first_name": name,
        "last_name": "L",
        "email": f"{name.lower()}@example.com",
        "segment": "retail",
        "first_order_date": None,
        "most_recent_order_date": None,
        "number_of_orders": 0,
        "lifetime_value": "0.00",
    }
    for n, name in ((1, "Ada"), (2, "Grace"), (3, "Edsger"))
]


def role_settings(tmp_path: Path, kafka_bootstrap: str, prefix: str, roles: Roles, sink: str) -> Settings:
    """Settings with a DSN per service: the owner's for DDL, ``sink`` for the sink, the reader's for status;
    postgres.dsn is the reader's too, so nothing falls back to the admin."""
    return env_overrides(
        settings_for(tmp_path / "data", kafka_bootstrap, prefix),
        CDCWH_POSTGRES__DSN=roles.dsn("reader"),
        CDCWH_POSTGRES__OWNER_DSN=roles.dsn("owner"),
        CDCWH_POSTGRES__SINK_DSN=roles.dsn(sink),
        CDCWH_POSTGRES__READER_DSN=roles.dsn("reader"),
        CDCWH_POSTGRES__SCHEMA=roles.marts,
        CDCWH_POSTGRES__AUDIT_SCHEMA=roles.audit,
    )


def produce_customers(bootstrap: str, settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    topic = gold_topic(settings.kafka.gold_topic_prefix, "customers")
    for version, row in enumerate(CUSTOMERS, start=1):
        key = json.dumps({"customer_id": row["customer_id"]})
        value = encode(
            mart="customers", op="upsert", version=version, source_ts_ms=None, key=key, row=json.dumps(row)
        )
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(10) == 0


def test_marts_created_by_the_owner_written_by_the_sink_read_by_the_reader(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str, pg_roles: Roles
) -> None:
    settings = role_settings(tmp_path, kafka_bootstrap, unique_prefix, pg_roles, sink="sink")
    produce_customers(kafka_bootstrap, settings)
    sink_until_caught_up(settings)
    with psycopg.connect(pg_roles.dsn("reader")) as conn:
        emails = conn.execute(
            sql.SQL("SELECT email FROM {} ORDER BY customer_id").format(
                sql.Identifier(pg_roles.marts, "customers")
            )
        ).fetchall()
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s", (pg_roles.marts,)
        ).fetchall()
    assert [e for (e,) in emails] == [str(c["email"]) for c in CUSTOMERS]
    assert owners == [(pg_roles.name("owner"),)]  # every mart table, and the sink's own, the owner's
    marts = {mart.name: mart.rows for mart in status_marts(settings)}  # `cdcwh status`, as the reader
    assert marts["customers"] == len(CUSTOMERS)


def test_a_sink_with_the_readers_dsn_stops_at_start_naming_the_privilege(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str, pg_roles: Roles
) -> None:
    settings = role_settings(tmp_path, kafka_bootstrap, unique_prefix, pg_roles, sink="reader")
    produce_customers(kafka_bootstrap, settings)
    with pytest.raises(ConfigError) as failure:
        sink_until_caught_up(settings)
    message = str(failure.value)
    assert pg_roles.name("reader") in message
    assert "postgres.sink_dsn" in message
    assert f"INSERT on table {pg_roles.marts}.customers" in message
    assert f"DELETE on table {pg_roles.marts}._dead_letters" in message
    with psycopg.connect(pg_roles.admin_dsn) as conn:  # nothing written
        rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_roles.marts, "customers"))
        ).fetchone()
    assert rows == (0,)


def test_a_sink_role_without_an_owner_dsn_cannot_create_the_marts_and_says_so(pg_roles: Roles) -> None:
    sink = PostgresMartSink(pg_roles.dsn("sink"), pg_roles.marts, SQL_DIR)
    with pytest.raises(ConfigError) as failure:
        sink.connect()
    message = str(failure.value)
    assert (
        f"the PostgreSQL role {pg_roles.name('sink')} (postgres.sink_dsn) lacks CREATE on schema" in message
    )
    assert pg_roles.marts in message
    with psycopg.connect(pg_roles.admin_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg_roles.marts,)
        ).fetchone()
    assert tables == (0,)
    # once the owner has created them, the sink role alone starts and writes
    PostgresMartSink(pg_roles.dsn("owner"), pg_roles.marts, SQL_DIR).connect().close()
    started = PostgresMartSink(pg_roles.dsn("sink"), pg_roles.marts, SQL_DIR)
    try:
        assert started.connect().execute("SELECT current_user").fetchone() == (pg_roles.name("sink"),)
    finally:
        started.close()


def test_a_role_without_usage_on_the_marts_schema_is_told_so_not_only_create(pg_roles: Roles) -> None:
    """The audit role has neither USAGE nor CREATE on the marts schema: the error names USAGE first (a grant
    of CREATE alone would not do)."""
    sink = PostgresMartSink(pg_roles.dsn("audit"), pg_roles.marts, SQL_DIR)
    with pytest.raises(ConfigError) as failure:
        sink.connect()
    message = str(failure.value)
    assert f"lacks USAGE on schema {pg_roles.marts}; CREATE on schema {pg_roles.marts}" in message
