"""The gold SQL models (sql/gold/*.sql) against the pure-Python reference, on generated and hand-built data.

Each test folds source changes into the silver layout the transform builds (``silver.<table>`` current rows,
``silver_history.<table>`` every applied change), loads it into a fresh DuckDB file, runs every model in
reference order as ``gold.<mart>``, and compares with ``marts_reference``. The hand-built cases also pin the
expected values, so a bug shared by the SQL and the reference still fails.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from cdcwh.generate import SHOP_TABLES, ShopGenerator, SourceChange, replay_state
from cdcwh.models import derive_marts, load_models
from cdcwh.sink.postgres import PostgresMartSink
from tests.support.marts_reference import (
    MART_COLUMNS,
    MART_KEYS,
    Row,
    compare_marts,
    customer_changes_from,
    reference_marts,
    source_time,
)

REPO = Path(__file__).resolve().parents[3]
GOLD_DIR = REPO / "sql" / "gold"
DOCS = REPO / "docs" / "gold.md"

MONEY = "DECIMAL(12,2)"  # a row's amount: the source's numeric(10,2) and room
SUM = "DECIMAL(38,2)"  # a sum of amounts: holds any legal total
TSTZ = "TIMESTAMP WITH TIME ZONE"
# The documented types of the shipped marts (docs/gold.md, "Types"), pinned: money never a float, sums with 38
# digits. A new model needs no entry: the sink derives its table from the model's result types
# (test_the_sink_creates_the_mart_tables_from_the_models checks the derivation on these).
EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    "orders": ("BIGINT", "INTEGER", "DATE", "VARCHAR", SUM, SUM, SUM, SUM, SUM),
    "customers": ("INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "DATE", "DATE", "BIGINT", SUM),
    "daily_revenue": ("DATE", "BIGINT", "BIGINT", SUM),
    "fact_order_items": (
        "BIGINT",
        "BIGINT",
        "INTEGER",
        "INTEGER",
        "DATE",
        "VARCHAR",
        "INTEGER",
        MONEY,
        SUM,
    ),
    "dim_products": ("INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", MONEY, "BOOLEAN", "VARCHAR"),
    "dim_customers": ("INTEGER", "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR", TSTZ, TSTZ, "BOOLEAN"),
    "dim_date": ("INTEGER", "DATE", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "BOOLEAN"),
}
POSTGRES_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "VARCHAR": "text",
    "DATE": "date",
    "BOOLEAN": "boolean",
    MONEY: "numeric(12,2)",
    SUM: "numeric(38,2)",
    TSTZ: "timestamp with time zone",
}

ARROW_TYPES: dict[str, pa.DataType] = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "decimal": pa.decimal128(10, 2),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
}
SILVER_META = [
    ("__op", pa.string()),
    ("__source_ts", pa.timestamp("us", tz="UTC")),
    ("__lsn", pa.int64()),
    ("__seq", pa.int64()),
]
HISTORY_META = [("__op", pa.string()), ("__source_ts", pa.timestamp("us", tz="UTC")), ("__seq", pa.int64())]


# --- the silver layout and the gold runner ------------------------------------------------------------------


def load_silver(con: duckdb.DuckDBPyConnection, changes: list[SourceChange]) -> None:
    """Fold ``changes`` (in apply order) into ``silver.<table>`` and ``silver_history.<table>``."""
    current: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in SHOP_TABLES}
    meta: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in SHOP_TABLES}
    history: dict[str, list[Row]] = {name: [] for name in SHOP_TABLES}
    for seq, change in enumerate(changes, start=1):
        columns = SHOP_TABLES[change.table].column_names
        key = change.key_tuple()
        if change.op == "d":
            current[change.table].pop(key, None)
            meta[change.table].pop(key, None)
            image = {column: change.key.get(column) for column in columns}
        else:
            assert change.after is not None
            image = dict(change.after)
            for column in change.toasted:
                image[column] = current[change.table][key][column]
            current[change.table][key] = image
            meta[change.table][key] = {
                "__op": change.op,
                "__source_ts": source_time(change.ts_ms),
                "__lsn": change.lsn,
                "__seq": seq,
            }
        history[change.table].append(
            {**image, "__op": change.op, "__source_ts": source_time(change.ts_ms), "__seq": seq}
        )
    assert current == replay_state(changes)

    con.execute("CREATE SCHEMA silver")
    con.execute("CREATE SCHEMA silver_history")
    for name, table in SHOP_TABLES.items():
        source = [(column.name, ARROW_TYPES[column.kind]) for column in table.columns]
        rows = [{**row, **meta[name][key]} for key, row in current[name].items()]
        _create(con, f"silver.{name}", pa.schema(source + SILVER_META), rows)
        _create(con, f"silver_history.{name}", pa.schema(source + HISTORY_META), history[name])


def _create(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, rows: list[Row]) -> None:
    con.register("staged", pa.Table.from_pylist(rows, schema=schema))
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM staged")
    con.unregister("staged")


def gold_models() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(GOLD_DIR.glob("*.sql"))}


def model_order(models: dict[str, str]) -> list[str]:
    """The models in an order where every ``gold.<mart>`` a model reads is built before it."""
    graph = {name: set(re.findall(r"\bgold\.(\w+)", text)) & models.keys() for name, text in models.items()}
    return list(TopologicalSorter(graph).static_order())


def run_gold(con: duckdb.DuckDBPyConnection) -> dict[str, list[Row]]:
    models = gold_models()
    con.execute("CREATE SCHEMA gold")
    for name in model_order(models):
        select = models[name].strip().removesuffix(";")
        con.execute(f"CREATE TABLE gold.{name} AS {select}")
    return {name: con.sql(f"SELECT * FROM gold.{name}").to_arrow_table().to_pylist() for name in models}


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    try:
        yield con
    finally:
        con.close()


def build(con: duckdb.DuckDBPyConnection, changes: list[SourceChange]) -> dict[str, list[Row]]:
    """Load ``changes`` into silver, run gold, check it against the reference, return the gold marts."""
    load_silver(con, changes)
    actual = run_gold(con)
    expected = reference_marts(replay_state(changes), customer_changes_from(changes))
    assert compare_marts(actual, expected) == []
    return actual


def by_key(rows: list[Row], mart: str) -> dict[tuple[Any, ...], Row]:
    return {tuple(row[column] for column in MART_KEYS[mart]): row for row in rows}


# --- hand-built change streams ------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Script:
    """Builds a stream of ``SourceChange``; each call is one transaction, one second after the previous."""

    def __init__(self) -> None:
        self.changes: list[SourceChange] = []
        self.at = T0

    def _emit(self, table: str, op: str, row: Row) -> datetime:
        self.at += timedelta(seconds=1)
        columns = SHOP_TABLES[table].column_names
        key = {"id": row["id"]}
        before = {column: row["id"] if column == "id" else None for column in columns} if op == "d" else None
        after = None if op == "d" else {column: row.get(column) for column in columns}
        lsn = 1000 + 8 * len(self.changes)
        ts_ms = (self.at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        self.changes.append(
            SourceChange(table, op, key, before, after, frozenset(), lsn, len(self.changes), ts_ms, "false")  # type: ignore[arg-type]
        )
        return self.at

    def put(self, table: str, op: str = "c", **row: Any) -> datetime:
        return self._emit(table, op, row)

    def delete(self, table: str, row_id: int) -> datetime:
        return self._emit(table, "d", {"id": row_id})

    def customer(self, op: str = "c", **row: Any) -> datetime:
        defaults = {"first_name": "Ada", "last_name": "Lovelace", "segment": "consumer", "country": "GB"}
        return self.put("customers", op, **{**defaults, "created_at": T0, **row})


def test_script_clock_matches_source_time() -> None:
    script = Script()
    at = script.customer(id=1, email="a@example.com")
    assert source_time(script.changes[0].ts_ms) == at


# --- generated workloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_gold_matches_reference_on_generated_stream(warehouse: duckdb.DuckDBPyConnection, seed: int) -> None:
    generator = ShopGenerator(seed)
    changes = list(generator.changes(3000))
    load_silver(warehouse, changes)
    actual = run_gold(warehouse)
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))

    assert compare_marts(actual, expected) == []
    # The stream exercises the interesting paths, so the comparison means something.
    dim_customers = expected["dim_customers"]
    assert any(row["version"] > 1 for row in dim_customers)
    assert any(not row["is_current"] for row in dim_customers)
    assert {row["status"] for row in expected["orders"]} >= {"placed", "completed", "cancelled", "returned"}
    assert len(expected["dim_date"]) >= len(expected["daily_revenue"]) > 0


def test_gold_column_types(warehouse: duckdb.DuckDBPyConnection) -> None:
    """On data, every model gives the columns and types the sink derives from it (empty tables shaped by the
    contracts), and the shipped marts the documented types."""
    changes = list(ShopGenerator(5).changes(500))
    build(warehouse, changes)
    derived = derive_marts(load_models(GOLD_DIR), REPO / "schemas" / "contracts")
    assert derived.failures == {} and set(derived.tables) == set(gold_models())
    for mart, table in derived.tables.items():
        described = warehouse.sql(f"DESCRIBE gold.{mart}").fetchall()
        assert [(name, kind) for name, kind, *_ in described] == [
            (column.name, column.duckdb_type) for column in table.columns
        ], mart
    for mart, types in EXPECTED_TYPES.items():
        described = warehouse.sql(f"DESCRIBE gold.{mart}").fetchall()
        assert [(name, kind) for name, kind, *_ in described] == list(
            zip(MART_COLUMNS[mart], types, strict=True)
        ), mart


def test_gold_on_empty_silver(warehouse: duckdb.DuckDBPyConnection) -> None:
    actual = build(warehouse, [])
    assert actual == {mart: [] for mart in MART_COLUMNS}
    for mart, types in EXPECTED_TYPES.items():
        described = warehouse.sql(f"DESCRIBE gold.{mart}").fetchall()
        assert tuple(kind for _, kind, *_ in described) == types, mart


def test_model_headers_name_the_mart_and_key() -> None:
    models = gold_models()
    assert set(models) == set(MART_KEYS)  # one file per mart, named after it
    for name, text in models.items():
        lines = text.splitlines()
        assert lines[0] == f"-- mart: {name}"
        assert lines[1] == f"-- primary key: {', '.join(MART_KEYS[name])}"
        assert lines[2].startswith("-- ") and len(lines[2]) > 10
        assert set(MART_KEYS[name]) <= set(MART_COLUMNS[name]), name
    # the keys docs/gold.md gives ("Key `order_id`.", "Key `(customer_id, version)`.") are the headers'
    documented = re.findall(r"^### `(\w+)`.*?^Key `\(?([\w, ]+?)\)?`", DOCS.read_text(), re.M | re.S)
    assert len(documented) >= 7
    for mart, key in documented:
        assert MART_KEYS[mart] == tuple(key.split(", ")), mart
    order = model_order(models)
    assert order.index("orders") < order.index("customers")
    assert order.index("fact_order_items") < order.index("daily_revenue")


# --- hand-built cases ---------------------------------------------------------------------------------------


def test_dim_customers_scd2(warehouse: duckdb.DuckDBPyConnection) -> None:
    s = Script()
    # Customer 1: first_name change (no version), segment twice, email once, a no-op update.
    c1_v1 = s.customer(op="r", id=1, email="ada@example.com")
    s.customer(op="u", id=1, email="ada@example.com", first_name="Augusta")
    c1_v2 = s.customer(op="u", id=1, email="ada@example.com", first_name="Augusta", segment="corporate")
    c1_v3 = s.customer(op="u", id=1, email="ada@example.com", first_name="Augusta", segment="home_office")
    c1_v4 = s.customer(op="u", id=1, email="ada@new.example.com", first_name="Augusta", segment="home_office")
    s.customer(op="u", id=1, email="ada@new.example.com", first_name="Augusta", segment="home_office")
    # Customer 2: deleted, so no current version.
    c2_v1 = s.customer(id=2, email="bob@example.com")
    c2_deleted = s.delete("customers", 2)
    # Customer 3: deleted and re-inserted with the same values: a new version.
    c3_v1 = s.customer(id=3, email="cy@example.com")
    c3_deleted = s.delete("customers", 3)
    c3_v2 = s.customer(id=3, email="cy@example.com")
    # Customer 4: NULL -> NULL is no change, NULL -> a value is one (IS DISTINCT FROM).
    c4_v1 = s.customer(id=4, email="di@example.com", segment=None, country=None)
    s.customer(op="u", id=4, email="di@example.com", segment=None, country=None, last_name="Changed")
    c4_v2 = s.customer(op="u", id=4, email="di@example.com", segment=None, country="FR")
    c4_v3 = s.customer(op="u", id=4, email="di@example.com", segment="corporate", country="FR")
    # Customer 5: all three SCD columns NULL, deleted and re-inserted the same: still a new version.
    c5_v1 = s.customer(id=5, email=None, segment=None, country=None)
    c5_deleted = s.delete("customers", 5)
    c5_v2 = s.customer(id=5, email=None, segment=None, country=None)

    marts = build(warehouse, s.changes)

    def version(
        cid: int,
        n: int,
        email: str | None,
        segment: str | None,
        country: str | None,
        start: datetime,
        end: datetime | None,
    ) -> Row:
        return {
            "customer_id": cid,
            "version": n,
            "email": email,
            "segment": segment,
            "country": country,
            "valid_from": start,
            "valid_to": end,
            "is_current": end is None,
        }

    expected = [
        version(1, 1, "ada@example.com", "consumer", "GB", c1_v1, c1_v2),
        version(1, 2, "ada@example.com", "corporate", "GB", c1_v2, c1_v3),
        version(1, 3, "ada@example.com", "home_office", "GB", c1_v3, c1_v4),
        version(1, 4, "ada@new.example.com", "home_office", "GB", c1_v4, None),
        version(2, 1, "bob@example.com", "consumer", "GB", c2_v1, c2_deleted),
        version(3, 1, "cy@example.com", "consumer", "GB", c3_v1, c3_deleted),
        version(3, 2, "cy@example.com", "consumer", "GB", c3_v2, None),
        version(4, 1, "di@example.com", None, None, c4_v1, c4_v2),
        version(4, 2, "di@example.com", None, "FR", c4_v2, c4_v3),
        version(4, 3, "di@example.com", "corporate", "FR", c4_v3, None),
        version(5, 1, None, None, None, c5_v1, c5_deleted),
        version(5, 2, None, None, None, c5_v2, None),
    ]
    assert compare_marts({"dim_customers": marts["dim_customers"]}, {"dim_customers": expected}) == []
    assert sorted(row["customer_id"] for row in marts["customers"]) == [1, 3, 4, 5]
    assert by_key(marts["customers"], "customers")[1,]["first_name"] == "Augusta"


def _shop_with_orders() -> Script:
    s = Script()
    for cid in (10, 11, 12):
        s.customer(id=cid, email=f"c{cid}@example.com")
    s.put(
        "products",
        id=1,
        sku="P1",
        name="Pen",
        category="office",
        price=Decimal("3.25"),
        active=True,
        description="long text",
    )

    def order(oid: int, cid: int, status: str, day: date) -> None:
        # orders.created_at is a timestamp without time zone: naive on purpose.
        created_at = datetime(day.year, day.month, day.day, 12)  # noqa: DTZ001
        s.put("orders", id=oid, customer_id=cid, status=status, order_date=day, created_at=created_at)

    def item(iid: int, oid: int, quantity: int, price: str) -> None:
        s.put("order_items", id=iid, order_id=oid, product_id=1, quantity=quantity, unit_price=Decimal(price))

    def payment(pid: int, oid: int, method: str, amount: str) -> None:
        s.put("payments", id=pid, order_id=oid, method=method, amount=Decimal(amount), created_at=T0)

    order(100, 10, "placed", date(2026, 1, 5))
    item(1000, 100, 2, "3.25")
    item(1001, 100, 1, "10.00")
    payment(500, 100, "credit_card", "10.00")
    payment(501, 100, "coupon", "2.50")
    payment(502, 100, "credit_card", "99.99")
    s.delete("payments", 502)  # a deleted payment counts nowhere
    order(101, 10, "completed", date(2026, 1, 6))  # no items, no payments
    order(102, 10, "cancelled", date(2025, 12, 31))
    item(1020, 102, 1, "7.00")
    payment(520, 102, "bank_transfer", "7.00")
    order(103, 10, "returned", date(2026, 1, 8))
    item(1030, 103, 1, "5.00")
    payment(530, 103, "gift_card", "5.00")
    order(104, 12, "shipped", date(2026, 1, 5))
    item(1040, 104, 4, "1.25")
    payment(540, 104, "bank_transfer", "5.00")
    order(110, 11, "cancelled", date(2026, 1, 7))
    payment(550, 110, "credit_card", "1.00")
    # An item whose order is gone (deleted without its items).
    order(105, 12, "placed", date(2026, 1, 5))
    item(1050, 105, 9, "9.00")
    s.delete("orders", 105)
    return s


def test_orders_and_customers_marts(warehouse: duckdb.DuckDBPyConnection) -> None:
    marts = build(warehouse, _shop_with_orders().changes)
    orders = by_key(marts["orders"], "orders")
    assert sorted(key for (key,) in orders) == [100, 101, 102, 103, 104, 110]
    o100 = orders[100,]
    assert (o100["credit_card_amount"], o100["coupon_amount"], o100["amount"]) == (
        Decimal("10.00"),
        Decimal("2.50"),
        Decimal("12.50"),
    )
    assert (o100["bank_transfer_amount"], o100["gift_card_amount"]) == (Decimal("0.00"), Decimal("0.00"))
    o101 = orders[101,]
    assert [o101[f"{m}_amount"] for m in ("credit_card", "coupon", "bank_transfer", "gift_card")] == [
        Decimal("0.00")
    ] * 4
    assert o101["amount"] == Decimal("0.00")
    assert orders[103,]["gift_card_amount"] == Decimal("5.00")

    customers = by_key(marts["customers"], "customers")
    # 10: cancelled 102 counts nowhere; returned 103 counts as an order but not in lifetime_value.
    assert customers[10,] == {
        "customer_id": 10,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "c10@example.com",
        "segment": "consumer",
        "first_order_date": date(2026, 1, 5),
        "most_recent_order_date": date(2026, 1, 8),
        "number_of_orders": 3,
        "lifetime_value": Decimal("12.50"),
    }
    # 11: only a cancelled order.
    c11 = customers[11,]
    assert (c11["first_order_date"], c11["most_recent_order_date"]) == (None, None)
    assert (c11["number_of_orders"], c11["lifetime_value"]) == (0, Decimal("0.00"))
    c12 = customers[12,]
    assert (c12["number_of_orders"], c12["lifetime_value"]) == (1, Decimal("5.00"))


def test_fact_order_items_and_daily_revenue(warehouse: duckdb.DuckDBPyConnection) -> None:
    marts = build(warehouse, _shop_with_orders().changes)
    items = by_key(marts["fact_order_items"], "fact_order_items")
    assert sorted(key for (key,) in items) == [1000, 1001, 1020, 1030, 1040]  # not 1050: order 105 is gone
    assert items[1000,] == {
        "order_item_id": 1000,
        "order_id": 100,
        "customer_id": 10,
        "product_id": 1,
        "order_date": date(2026, 1, 5),
        "status": "placed",
        "quantity": 2,
        "unit_price": Decimal("3.25"),
        "line_amount": Decimal("6.50"),
    }

    # Only placed/shipped/completed orders: not 102 (cancelled), 103 (returned), 110 (cancelled).
    assert sorted(marts["daily_revenue"], key=lambda row: row["order_date"]) == [
        {"order_date": date(2026, 1, 5), "orders": 2, "items_sold": 7, "revenue": Decimal("21.50")},
        {"order_date": date(2026, 1, 6), "orders": 1, "items_sold": 0, "revenue": Decimal("0.00")},
    ]


def test_dim_date_and_dim_products(warehouse: duckdb.DuckDBPyConnection) -> None:
    marts = build(warehouse, _shop_with_orders().changes)
    days = sorted(marts["dim_date"], key=lambda row: row["date"])
    # 2025-12-31 (cancelled order 102) .. 2026-01-08 (returned order 103): every status counts.
    assert [row["date"] for row in days] == [date(2025, 12, 31) + timedelta(days=n) for n in range(9)]
    assert days[0] == {
        "date_key": 20251231,
        "date": date(2025, 12, 31),
        "year": 2025,
        "quarter": 4,
        "month": 12,
        "day": 31,
        "iso_day_of_week": 3,
        "is_weekend": False,
    }
    saturday = days[3]
    assert (
        saturday["date_key"],
        saturday["quarter"],
        saturday["iso_day_of_week"],
        saturday["is_weekend"],
    ) == (
        20260103,
        1,
        6,
        True,
    )
    assert (days[4]["iso_day_of_week"], days[4]["is_weekend"]) == (7, True)
    assert (days[5]["iso_day_of_week"], days[5]["is_weekend"]) == (1, False)

    assert marts["dim_products"] == [
        {
            "product_id": 1,
            "sku": "P1",
            "name": "Pen",
            "category": "office",
            "price": Decimal("3.25"),
            "active": True,
            "description": "long text",
        }
    ]


# --- the reference comparison itself ------------------------------------------------------------------------


def test_compare_marts_reports_differences() -> None:
    expected = {
        "daily_revenue": [
            {"order_date": date(2026, 1, 5), "orders": 1, "items_sold": 2, "revenue": Decimal("1.50")}
        ]
    }
    same = {"daily_revenue": [{**expected["daily_revenue"][0], "_version": 3, "_updated_at": T0}]}
    assert compare_marts(same, expected) == []
    scale = {"daily_revenue": [{**expected["daily_revenue"][0], "revenue": Decimal("1.5")}]}
    assert len(compare_marts(scale, expected)) == 1
    as_float = {"daily_revenue": [{**expected["daily_revenue"][0], "revenue": 1.5}]}
    assert len(compare_marts(as_float, expected)) == 1
    assert len(compare_marts({"daily_revenue": []}, expected)) == 1
    assert len(compare_marts({"daily_revenue": expected["daily_revenue"] * 2}, expected)) == 1
    assert compare_marts({}, expected) == ["daily_revenue: missing from actual"]
    # a mart without a reference computation (a model added as one file) is not compared
    assert compare_marts({**same, "new_mart": [{"id": 1}]}, expected) == []


# --- PostgreSQL DDL -----------------------------------------------------------------------------------------


@pytest.fixture
def scratch_postgres(postgres_dsn: str) -> Iterator[str]:
    """A database of its own on the session's PostgreSQL, dropped afterwards."""
    name = f"cdcwh_marts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(postgres_dsn, dbname=name)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_sink_creates_the_mart_tables_from_the_models(scratch_postgres: str) -> None:
    """No hand-written DDL: the sink creates each mart table from its model's result types (twice: the second
    start finds them and changes nothing)."""
    for _ in range(2):
        sink = PostgresMartSink(scratch_postgres, "marts", REPO / "sql")
        sink.connect()
        sink.close()
    with psycopg.connect(scratch_postgres, autocommit=True) as conn:
        for mart, types in EXPECTED_TYPES.items():
            columns = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (f"marts.{mart}",),
            ).fetchall()
            assert columns == [
                *(
                    (name, POSTGRES_TYPES[kind], name in MART_KEYS[mart])
                    for name, kind in zip(MART_COLUMNS[mart], types, strict=True)
                ),
                ("_version", "bigint", True),
                ("_updated_at", "timestamp with time zone", True),
            ], mart
            key = conn.execute(
                "SELECT a.attname FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = %s::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (f"marts.{mart}",),
            ).fetchall()
            assert tuple(name for (name,) in key) == MART_KEYS[mart], mart
