"""Adding a gold model is one SQL file: a model dropped into a SQL directory (the shipped models copied there,
``CDCWH_SQL_DIR`` pointing at it) is computed by the transform, published, and lands in a PostgreSQL table
the sink creates from it, with no other edit. Real broker, Iceberg, DuckDB and PostgreSQL; ingest, transform
and sink run in this process."""

from __future__ import annotations

import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from cdcwh.generate import ShopGenerator
from tests.support.marts_reference import customer_changes_from, reference_marts
from tests.support.pipeline import settings_for
from tests.support.services import ingest_until_caught_up, sink_until_caught_up, transform_once
from tests.support.warehouse import produce_changes

NEW_MODEL = """-- mart: segment_value
-- primary key: segment
-- One row per customer segment: its existing customers and their lifetime value (read from gold.customers).
SELECT
    coalesce(segment, '(none)') AS segment,
    count(*) AS customers,
    CAST(sum(lifetime_value) AS DECIMAL(38, 2)) AS lifetime_value
FROM gold.customers
GROUP BY ALL
"""


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = f"added_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_a_model_added_as_one_file_reaches_postgres(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, schema: str
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql" / "gold", sql_dir / "gold")
    (sql_dir / "gold" / "segment_value.sql").write_text(NEW_MODEL)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        tmp_path / "data",
        kafka_bootstrap,
        prefix,
        sql_dir=sql_dir,
        postgres={"dsn": postgres_dsn, "schema": schema},
    )
    generator = ShopGenerator(11)
    changes = list(generator.changes(600))
    produce_changes(kafka_bootstrap, prefix, changes)

    # in-process, with the process state the services change put back (tests/support/services.py)
    ingest_until_caught_up(settings)
    transform_once(settings)
    sink_until_caught_up(settings)

    # what the new mart must hold, from the pure-Python reference of gold.customers
    expected: dict[str, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal("0.00")))
    reference = reference_marts(generator.expected_state(), customer_changes_from(changes))
    for customer in reference["customers"]:
        count, value = expected[customer["segment"] or "(none)"]
        expected[customer["segment"] or "(none)"] = (count + 1, value + customer["lifetime_value"])
    assert len(expected) > 1

    with psycopg.connect(postgres_dsn) as conn:
        table = sql.Identifier(schema, "segment_value")
        rows = conn.execute(
            sql.SQL("SELECT segment, customers, lifetime_value FROM {}").format(table)
        ).fetchall()
        assert {segment: (count, value) for segment, count, value in rows} == dict(expected)
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'"{schema}".segment_value',),
        ).fetchall()
        assert columns == [
            ("segment", "text", True),
            ("customers", "bigint", False),
            ("lifetime_value", "numeric(38,2)", False),
            ("_version", "bigint", True),
            ("_updated_at", "timestamp with time zone", True),
        ]
        # the shipped marts landed alongside
        orders = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "orders")))
        assert orders.fetchone() == (len(reference["orders"]),)
