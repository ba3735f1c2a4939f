"""The sink creates the mart tables from the gold models and checks existing ones: a database created by the
former hand-written DDL keeps working, and a table that cannot hold what its model computes stops the sink
at start with an error naming the mart and the column, with nothing half changed. Real PostgreSQL."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from cdcwh.errors import ConfigError
from cdcwh.sink.postgres import GoldChange, PostgresMartSink
from tests.integration.sink.legacy import legacy_mart_ddl

SQL_DIR = PROJECT_ROOT / "sql"
CONTRACTS = PROJECT_ROOT / "schemas" / "contracts"


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = f"tables_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def start(dsn: str, schema: str, sql_dir: Path = SQL_DIR) -> None:
    sink = PostgresMartSink(dsn, schema, sql_dir, CONTRACTS)
    try:
        sink.connect()
    finally:
        sink.close()


def execute(dsn: str, query: sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query)


def columns(dsn: str, schema: str, table: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(dsn) as conn:
        return [
            (str(name), str(kind), bool(not_null))
            for name, kind, not_null in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (f'"{schema}"."{table}"',),
            ).fetchall()
        ]


def sql_dir_with(tmp_path: Path, name: str, text: str) -> Path:
    """The shipped models plus one more, in a SQL directory of their own."""
    shutil.copytree(SQL_DIR / "gold", tmp_path / "sql" / "gold")
    (tmp_path / "sql" / "gold" / f"{name}.sql").write_text(text)
    return tmp_path / "sql"


def test_a_database_created_by_the_former_ddl_keeps_working(postgres_dsn: str, schema: str) -> None:
    execute(postgres_dsn, sql.SQL(legacy_mart_ddl(schema)))  # type: ignore[arg-type]
    before = {mart: columns(postgres_dsn, schema, mart) for mart in ("orders", "dim_date")}
    assert ("amount", "numeric(38,2)", True) in before["orders"]  # NOT NULL beyond the key, as it was

    sink = PostgresMartSink(postgres_dsn, schema, SQL_DIR)
    try:
        sink.connect()
        row = {
            "order_id": 1,
            "customer_id": 7,
            "order_date": "2024-03-01",
            "status": "placed",
            "credit_card_amount": "1.10",
            "coupon_amount": "0.00",
            "bank_transfer_amount": "0.00",
            "gift_card_amount": "0.00",
            "amount": "1.10",
        }
        result = sink.apply([GoldChange("orders", "upsert", 3, '{"order_id":1}', row, None)])
        assert result.upserts == {"orders": 1} and result.dead_letters == []
    finally:
        sink.close()
    assert {mart: columns(postgres_dsn, schema, mart) for mart in before} == before
    with psycopg.connect(postgres_dsn) as conn:
        query = sql.SQL("SELECT order_id, amount FROM {}").format(sql.Identifier(schema, "orders"))
        assert conn.execute(query).fetchall() == [(1, Decimal("1.10"))]


def test_a_mart_table_without_a_column_of_its_model_stops_the_sink(postgres_dsn: str, schema: str) -> None:
    start(postgres_dsn, schema)
    orders = sql.Identifier(schema, "orders")
    execute(postgres_dsn, sql.SQL("ALTER TABLE {} DROP COLUMN coupon_amount").format(orders))
    execute(postgres_dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "dim_date")))

    with pytest.raises(ConfigError, match=rf"{schema}\.orders has no column coupon_amount"):
        start(postgres_dsn, schema)
    assert columns(postgres_dsn, schema, "dim_date") == [], "the failed start created nothing"

    execute(postgres_dsn, sql.SQL("ALTER TABLE {} ADD COLUMN coupon_amount numeric(38,2)").format(orders))
    start(postgres_dsn, schema)
    assert columns(postgres_dsn, schema, "dim_date")[0] == ("date_key", "integer", True)


def test_a_mart_table_with_another_primary_key_stops_the_sink(postgres_dsn: str, schema: str) -> None:
    start(postgres_dsn, schema)
    customers = sql.Identifier(schema, "customers")
    execute(postgres_dsn, sql.SQL("ALTER TABLE {} DROP CONSTRAINT customers_pkey").format(customers))
    execute(postgres_dsn, sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (customer_id, email)").format(customers))
    with pytest.raises(ConfigError, match=r"customers has the primary key \(customer_id, email\)"):
        start(postgres_dsn, schema)


def test_a_column_type_with_no_postgres_type_is_named(tmp_path: Path, postgres_dsn: str, schema: str) -> None:
    sql_dir = sql_dir_with(
        tmp_path,
        "tags",
        "-- mart: tags\n-- primary key: id\nSELECT id, [sku, name] AS labels FROM silver.products",
    )
    with pytest.raises(ConfigError, match=r"mart tags: column labels is VARCHAR\[\]"):
        start(postgres_dsn, schema, sql_dir)


def test_a_model_the_contracts_do_not_describe(tmp_path: Path, postgres_dsn: str, schema: str) -> None:
    """Without a table it cannot be created: an error naming the mart. With one (made by hand), the sink
    keeps it as it is."""
    sql_dir = sql_dir_with(
        tmp_path, "elsewhere", "-- mart: elsewhere\n-- primary key: id\nSELECT id FROM silver.not_a_contract"
    )
    with pytest.raises(
        ConfigError, match=rf"cannot create the mart table {schema}\.elsewhere: .*not_a_contract"
    ):
        start(postgres_dsn, schema, sql_dir)
    execute(postgres_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    execute(
        postgres_dsn,
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, _version bigint, _updated_at timestamptz)").format(
            sql.Identifier(schema, "elsewhere")
        ),
    )
    start(postgres_dsn, schema, sql_dir)
    assert [name for name, _, _ in columns(postgres_dsn, schema, "elsewhere")] == [
        "id",
        "_version",
        "_updated_at",
    ]
    assert columns(postgres_dsn, schema, "orders")[0] == ("order_id", "bigint", True)


def test_a_model_added_while_the_sink_runs_gets_its_table_at_its_first_change(
    tmp_path: Path, postgres_dsn: str, schema: str
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR / "gold", sql_dir / "gold")
    sink = PostgresMartSink(postgres_dsn, schema, sql_dir, CONTRACTS)
    try:
        sink.connect()
        assert columns(postgres_dsn, schema, "product_count") == []
        (sql_dir / "gold" / "product_count.sql").write_text(
            "-- mart: product_count\n-- primary key: category\n"
            "SELECT category, count(*) AS products FROM silver.products GROUP BY category"
        )
        row = {"category": "tools", "products": 3}
        result = sink.apply([GoldChange("product_count", "upsert", 1, '{"category":"tools"}', row, None)])
        assert result.upserts == {"product_count": 1}
    finally:
        sink.close()
    assert columns(postgres_dsn, schema, "product_count")[:2] == [
        ("category", "text", True),
        ("products", "bigint", False),
    ]
