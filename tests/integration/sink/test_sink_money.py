"""Gold money never overflows on legal source data: payments of ``numeric(10,2)`` near 99,999,999.99, hundreds
per order and customer, sum exactly in DuckDB gold and in PostgreSQL (``numeric(38,2)``), compared with sums
computed in Python with ``decimal.Decimal``. An existing mart with the old ``numeric(12,2)`` columns is
widened when the sink starts, and an existing DuckDB gold table with the old ``DECIMAL(12,2)`` takes the new
type."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.generate import SourceChange
from cdcwh.generate.model import ShopModel
from cdcwh.goldfeed import GoldChange
from cdcwh.models import load_models
from cdcwh.sink.postgres import PostgresMartSink
from cdcwh.transform.gold import refresh_model
from cdcwh.warehouse import open_warehouse
from tests.integration.sink.legacy import legacy_mart_ddl
from tests.support.pipeline import run_ingest_until_caught_up, run_sink_until_caught_up, settings_for
from tests.support.warehouse import produce_changes, run_transform_once

SQL_DIR = PROJECT_ROOT / "sql"
TOP = Decimal("99999999.99")  # the largest numeric(10,2)
CENT = Decimal("0.01")
SUMS = {
    "orders": ["credit_card_amount", "coupon_amount", "bank_transfer_amount", "gift_card_amount", "amount"],
    "customers": ["lifetime_value"],
    "daily_revenue": ["revenue"],
    "fact_order_items": ["line_amount"],
}
METHODS = ("credit_card", "coupon", "bank_transfer", "gift_card")


def big_payments_workload(seed: int) -> tuple[list[SourceChange], dict[str, dict[Any, dict[str, Any]]]]:
    """Two customers; customer 1 has two placed orders of 150 payments each near 99,999,999.99 and an item of
    1,000 x 99,999,999.99; customer 2 one order with two payments. Returns the changes and the expected
    money columns, summed here with Decimal."""
    rng = random.Random(seed)
    model = ShopModel(rng, datetime(2024, 3, 1, 9, tzinfo=UTC))
    changes: list[SourceChange] = []
    created = datetime(2024, 3, 1, 9, tzinfo=UTC)
    model.begin(events=1)
    for customer_id in (1, 2):
        row = {
            "id": customer_id,
            "email": f"c{customer_id}@example.com",
            "first_name": "Big",
            "last_name": "Spender",
            "segment": "corporate",
            "country": "FR",
            "created_at": created,
        }
        changes.append(model.insert("customers", row))
    product = {
        "id": 1,
        "sku": "SKU-1",
        "name": "yacht",
        "category": "boats",
        "price": TOP,
        "active": True,
        "description": "large",
    }
    changes.append(model.insert("products", product))
    model.commit()
    order_amounts: dict[int, dict[str, Decimal]] = {}
    payment_id = 0
    for order_id, customer_id, payments in ((1, 1, 150), (2, 1, 150), (3, 2, 2)):
        model.begin(events=payments + 2)
        order = {
            "id": order_id,
            "customer_id": customer_id,
            "status": "placed",
            "order_date": created.date(),
            "created_at": created.replace(tzinfo=None),
        }
        changes.append(model.insert("orders", order))
        totals = dict.fromkeys(METHODS, Decimal("0.00"))
        for _ in range(payments):
            payment_id += 1
            amount = TOP - Decimal(rng.randrange(0, 10_000)) * CENT
            method = METHODS[payment_id % len(METHODS)]
            totals[method] += amount
            payment = {
                "id": payment_id,
                "order_id": order_id,
                "method": method,
                "amount": amount,
                "created_at": created,
            }
            changes.append(model.insert("payments", payment))
        item = {"id": order_id, "order_id": order_id, "product_id": 1, "quantity": 1000, "unit_price": TOP}
        changes.append(model.insert("order_items", item))
        model.commit()
        order_amounts[order_id] = {f"{m}_amount": t for m, t in totals.items()} | {
            "amount": sum(totals.values())
        }
    line = 1000 * TOP
    expected: dict[str, dict[Any, dict[str, Any]]] = {
        "orders": order_amounts,
        "customers": {
            1: {"lifetime_value": order_amounts[1]["amount"] + order_amounts[2]["amount"]},
            2: {"lifetime_value": order_amounts[3]["amount"]},
        },
        "daily_revenue": {created.date(): {"revenue": 3 * line}},
        "fact_order_items": {order_id: {"line_amount": line} for order_id in (1, 2, 3)},
    }
    assert expected["customers"][1]["lifetime_value"] > Decimal("9999999999.99")  # beyond DECIMAL(12,2)
    return changes, expected


def money_columns(rows: list[tuple[Any, ...]], columns: list[str]) -> dict[Any, dict[str, Decimal]]:
    return {row[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}


def test_sums_of_legal_payments_land_exactly_in_gold_and_postgres(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    changes, expected = big_payments_workload(5)
    produce_changes(kafka_bootstrap, prefix, changes)
    env = {"CDCWH_POSTGRES__DSN": postgres_dsn, "CDCWH_POSTGRES__SCHEMA": pg_schema}
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    run_sink_until_caught_up(settings, **env)

    con = duckdb.connect(str(settings.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        for mart, columns in SUMS.items():
            key = next(iter(load_mart_keys()[mart]))
            select = ", ".join([key, *columns])
            gold = con.execute(f"SELECT {select} FROM gold.{mart}").fetchall()
            assert money_columns(gold, columns) == expected[mart], mart
            types = dict(
                con.execute(f"SELECT column_name, column_type FROM (DESCRIBE gold.{mart})").fetchall()
            )
            assert {types[c] for c in columns} == {"DECIMAL(38,2)"}, mart
    finally:
        con.close()
    with psycopg.connect(postgres_dsn) as conn:
        for mart, columns in SUMS.items():
            key = next(iter(load_mart_keys()[mart]))
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, [key, *columns])), sql.Identifier(pg_schema, mart)
            )
            stored = money_columns(conn.execute(query).fetchall(), columns)
            assert stored == expected[mart], mart
            assert all(v.as_tuple().exponent == -2 for r in stored.values() for v in r.values()), mart
    assert column_types(postgres_dsn, pg_schema)["customers"]["lifetime_value"] == "numeric(38,2)"


def load_mart_keys() -> dict[str, tuple[str, ...]]:
    return {model.name: model.primary_key for model in load_models(SQL_DIR / "gold")}


def column_types(dsn: str, pg_schema: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
            (pg_schema,),
        ).fetchall()
    types: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        types.setdefault(table, {})[column] = kind
    return types


def filenode(dsn: str, pg_schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_relation_filenode(%s::regclass)", (f'"{pg_schema}"."{table}"',)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_existing_mart_with_the_old_money_type_is_widened_on_sink_start(
    postgres_dsn: str, pg_schema: str
) -> None:
    old_ddl = legacy_mart_ddl(pg_schema).replace("numeric(38, 2)", "numeric(12, 2)")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(old_ddl)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (1, 7, '2024-03-01', 'placed', 1.10, 0, 0, 0, 1.10, 3, now())"
            ).format(sql.Identifier(pg_schema, "orders"))
        )
    assert column_types(postgres_dsn, pg_schema)["orders"]["amount"] == "numeric(12,2)"
    orders_file = filenode(postgres_dsn, pg_schema, "orders")

    sink = PostgresMartSink(postgres_dsn, pg_schema, SQL_DIR)
    try:
        sink.connect()
        types = column_types(postgres_dsn, pg_schema)
        for mart, columns in SUMS.items():
            assert {types[mart][c] for c in columns} == {"numeric(38,2)"}, mart
        # a cast of a numeric(10,2) source column keeps its type; so does every other column
        assert types["fact_order_items"]["unit_price"] == "numeric(12,2)"
        assert types["dim_products"]["price"] == "numeric(12,2)"
        assert types["customers"]["number_of_orders"] == "bigint"
        # widening the precision does not rewrite the table, and the row is untouched
        assert filenode(postgres_dsn, pg_schema, "orders") == orders_file
        big = "12345678901234.56"
        row = {
            "order_id": 2,
            "customer_id": 7,
            "order_date": "2024-03-02",
            "status": "placed",
            "credit_card_amount": big,
            "coupon_amount": "0.00",
            "bank_transfer_amount": "0.00",
            "gift_card_amount": "0.00",
            "amount": big,
        }
        result = sink.apply([GoldChange("orders", "upsert", 4, '{"order_id":2}', row, None)])
        assert result.dead_letters == []
    finally:
        sink.close()
    with psycopg.connect(postgres_dsn) as conn:
        amounts = conn.execute(
            sql.SQL("SELECT order_id, amount FROM {} ORDER BY 1").format(sql.Identifier(pg_schema, "orders"))
        ).fetchall()
    assert amounts == [(1, Decimal("1.10")), (2, Decimal(big))]


def test_an_existing_gold_table_with_the_old_money_type_takes_the_new_one(tmp_path: Path) -> None:
    """A warehouse file whose gold.orders was computed by the DECIMAL(12,2) model: after the model's new
    SQL runs, the columns are DECIMAL(38,2) and hold sums beyond DECIMAL(12,2)."""
    settings = Settings(data_dir=tmp_path / "data")  # type: ignore[call-arg]
    [orders_model] = [m for m in load_models(SQL_DIR / "gold") if m.name == "orders"]
    old_model = replace(orders_model, sql=orders_model.sql.replace("DECIMAL(38, 2)", "DECIMAL(12, 2)"))
    con = open_warehouse(settings)
    try:
        con.execute(
            "CREATE TABLE silver.orders (id BIGINT, customer_id INTEGER, status VARCHAR, order_date DATE)"
        )
        con.execute(
            "CREATE TABLE silver.payments (id BIGINT, order_id BIGINT, method VARCHAR, amount DECIMAL(10,2))"
        )
        con.execute("INSERT INTO silver.orders VALUES (1, 7, 'placed', DATE '2024-03-01')")
        con.execute("INSERT INTO silver.payments VALUES (1, 1, 'coupon', 5.00)")
        refresh_model(con, old_model, 1)
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE gold.orders)").fetchall())
        assert types["amount"] == "DECIMAL(12,2)"
        con.execute(
            "INSERT INTO silver.payments "
            "SELECT 1 + i, 1, 'credit_card', 99999999.99 FROM range(1, 201) AS t(i)"
        )
        refresh_model(con, orders_model, 2)
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE gold.orders)").fetchall())
        assert {types[c] for c in SUMS["orders"]} == {"DECIMAL(38,2)"}
        amount = con.execute("SELECT amount FROM gold.orders").fetchall()
        assert amount == [(Decimal("5.00") + 200 * TOP,)]
    finally:
        con.close()
