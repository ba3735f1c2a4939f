"""Which columns of an entity a caller may read row by row (the typed mart fields), and the page SQL: the
columns asked for, the key, the row filters and the cursor as parameters."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from cdcwh.config import PROJECT_ROOT
from cdcwh.serve.compile import Principal, QueryError
from cdcwh.serve.model import SemanticModel, load_model
from cdcwh.serve.rows import compile_rows, decode_cursor, encode_cursor, paging, readable, row_columns

ORDERS_TYPES = {"order_id": "bigint", "status": "text", "order_date": "date", "amount": "numeric"}


@pytest.fixture(scope="module")
def model() -> SemanticModel:
    return load_model(PROJECT_ROOT / "schemas" / "semantic")


def test_row_columns_are_dimensions_and_unfiltered_measures(model: SemanticModel) -> None:
    assert row_columns(model.entities["orders"]) == ["order_id", "status", "order_date", "amount"]
    # revenue and items_sold count qualifying lines only: their columns open no rows
    assert row_columns(model.entities["order_items"]) == ["order_item_id", "status", "order_date"]


def test_readable_follows_the_roles(model: SemanticModel) -> None:
    analyst = Principal("a", ("analyst",))
    dashboard = Principal("d", ("dashboard",))
    assert readable(model, analyst, "orders", ORDERS_TYPES, unique=True) == set(ORDERS_TYPES)
    assert (
        readable(model, dashboard, "orders", ORDERS_TYPES, unique=True) is None
    )  # order_id not granted: no rows
    daily = {"order_date": "date", "revenue": "numeric", "orders": "bigint", "items_sold": "bigint"}
    assert readable(model, dashboard, "daily_revenue", daily, unique=True) == set(daily)
    assert readable(model, analyst, "no_such_entity", {}, unique=True) is None


def test_a_timestamp_key_read_as_time_keeps_measure_columns_closed(tmp_path: Path) -> None:
    """Grouping by a time dimension truncates it, so a measure's aggregate by it is not the row's value."""
    (tmp_path / "m.yml").write_text(
        "entities:\n"
        "  ticks:\n"
        "    mart: ticks\n"
        "    primary_key: [at]\n"
        "    dimensions: {at: {column: at, type: time}}\n"
        "    measures: {price: {agg: max, column: price}}\n"
        "roles:\n"
        "  reader: {members: [ticks.*]}\n"
    )
    model = load_model(tmp_path)
    reader = Principal("r", ("reader",))
    assert readable(model, reader, "ticks", {"at": "timestamp with time zone"}, unique=True) == {"at"}
    assert readable(model, reader, "ticks", {"at": "date"}, unique=True) == {"at", "price"}
    # a key the mart does not hold unique: the rows are not the aggregate's, no measure column
    assert readable(model, reader, "ticks", {"at": "date"}, unique=False) == {"at"}


def test_the_page_sql_binds_the_cursor_and_the_claim(model: SemanticModel) -> None:
    german = Principal("g", ("analyst",), {"country": "DE"})
    compiled = compile_rows(
        model,
        "orders",
        german,
        schema="marts",
        columns=["amount"],
        first=5,
        after=encode_cursor([41]),
        max_rows=10,
        types=ORDERS_TYPES,
        order=("order_id",),
    )
    text = compiled.key()
    assert compiled.columns == ("order_id", "amount") and compiled.raw
    assert '"t0"."order_id"' in text and '"t0"."status"' not in text
    assert "'DE'" not in text and "41" not in text  # values are parameters
    assert compiled.params[-3:] == ("DE", 41, 6)  # the claim, the cursor, first + 1
    with pytest.raises(QueryError, match=r"first must be between 1 and 10 \(serve.max_rows\)"):
        compile_rows(
            model,
            "orders",
            german,
            schema="m",
            columns=[],
            first=11,
            after=None,
            max_rows=10,
            types={},
            order=None,
        )


def test_the_schema_types_each_entity_from_its_columns(model: SemanticModel) -> None:
    from cdcwh.config import Settings
    from cdcwh.serve.app import build_schema

    settings = Settings(serve={"jwt_secret": "k" * 32})
    printed = str(build_schema(settings, model, {"orders": ORDERS_TYPES}, {"orders": [("order_id",)]}))
    orders = printed[printed.index("type Orders {") :].split("}", 1)[0]
    for field in ("orderId: BigInt", "status: String", "orderDate: Date", "amount: Decimal"):
        assert field in orders
    assert "orders(first: Int! = 100, after: String = null): OrdersPage!" in printed


@pytest.mark.parametrize(
    ("entity", "type_name"),
    [
        ("page_info", "PageInfo"),
        ("string", "String"),
        ("big_int", "BigInt"),
        ("semantic_result", "SemanticResult"),
        ("orders_page", "OrdersPage"),
        ("query", "Query"),
        ("member", "Member"),
        ("date", "Date"),
    ],
)
def test_an_entity_whose_type_name_is_taken_is_refused(tmp_path: Path, entity: str, type_name: str) -> None:
    """strawberry refuses a second type of one name; the error names the entity."""
    from cdcwh.config import Settings
    from cdcwh.errors import ConfigError
    from cdcwh.serve.app import build_schema

    (tmp_path / "m.yml").write_text(
        f"entities:\n  {entity}:\n    mart: p\n    primary_key: [id]\n"
        "    dimensions: {id: {column: id}}\n"
        f"  orders:\n    mart: p\n    primary_key: [id]\n    dimensions: {{id: {{column: id}}}}\n"
        f"roles:\n  reader: {{members: [{entity}.*]}}\n"
    )
    settings = Settings(serve={"jwt_secret": "k" * 32})
    with pytest.raises(ConfigError, match=f"entity {entity} would name a GraphQL type {type_name},"):
        build_schema(settings, load_model(tmp_path), {"p": {"id": "date"}}, {"p": [("id",)]})


@pytest.mark.parametrize(
    ("entity", "key"),
    [
        ("orders", ["abc"]),  # text for a bigint key
        ("orders", [True]),
        ("orders", [None]),
        ("orders", [1.5]),
        ("orders", [2**63]),
        ("orders", [1, 2]),  # too long
        ("orders", {"order_id": 1}),
        ("daily_revenue", ["zz"]),  # not a date
        ("daily_revenue", [20240302]),
        ("daily_revenue", [None]),
    ],
)
def test_a_cursor_not_fitting_the_key_is_refused_before_sql(
    model: SemanticModel, entity: str, key: object
) -> None:
    types = {"order_id": "bigint", "order_date": "date"}
    cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
    with pytest.raises(QueryError, match="^not a cursor of this API$"):
        compile_rows(
            model,
            entity,
            Principal("a", ("analyst",)),
            schema="m",
            columns=[],
            first=1,
            after=cursor,
            max_rows=10,
            types=types,
            order=("order_id",) if entity == "orders" else ("order_date",),
        )


def test_a_cursor_carries_the_key_values_typed(model: SemanticModel) -> None:
    compiled = compile_rows(
        model,
        "daily_revenue",
        Principal("a", ("analyst",)),
        schema="m",
        columns=[],
        first=1,
        after=encode_cursor([dt.date(2024, 3, 2)]),
        max_rows=10,
        types={"order_date": "date"},
        order=("order_date",),
    )
    assert compiled.params[-2:] == (dt.date(2024, 3, 2), 2)
    assert decode_cursor(encode_cursor([Decimal("1.50"), "x"]), ["numeric", "text"]) == [Decimal("1.50"), "x"]
    with pytest.raises(QueryError, match="not a cursor"):
        decode_cursor(encode_cursor(["a\x00b"]), ["text"])
    with pytest.raises(QueryError, match="not a cursor"):  # a key type no cursor is made for
        decode_cursor(encode_cursor(["(1,2)"]), ["point"])


def test_paging_follows_the_marts_unique_indexes(model: SemanticModel) -> None:
    orders, profiles = model.entities["orders"], model.entities["customer_profiles"]
    assert paging(orders, [("order_id",)], ORDERS_TYPES) == (("order_id",), True)
    # dim_customers: (customer_id, version) unique, the entity's key customer_id is not: version breaks ties
    types = {"customer_id": "bigint", "version": "integer"}
    assert paging(profiles, [("customer_id", "version")], types) == (("customer_id", "version"), False)
    assert paging(orders, [], ORDERS_TYPES) == (None, False)  # no unique index: not paged
    assert paging(orders, [("order_id",)], {"order_id": "point"}) == (None, True)  # no cursor for it


def test_an_entity_not_paged_refuses_a_cursor(model: SemanticModel) -> None:
    with pytest.raises(QueryError, match=r"orders rows are not paged \(no primary key or unique index"):
        compile_rows(
            model,
            "orders",
            Principal("a", ("analyst",)),
            schema="m",
            columns=[],
            first=1,
            after=encode_cursor([1]),
            max_rows=10,
            types=ORDERS_TYPES,
            order=None,
        )


def test_a_column_of_a_type_shown_as_string_is_read_as_text(model: SemanticModel) -> None:
    compiled = compile_rows(
        model,
        "orders",
        Principal("a", ("analyst",)),
        schema="m",
        columns=["order_id", "status"],
        first=1,
        after=None,
        max_rows=10,
        types={"order_id": "bigint", "status": "inet"},
        order=("order_id",),
        text={"status", "order_id"},
    )
    text = compiled.key()
    assert '"t0"."status"::text' in text and '"t0"."order_id"::text' not in text  # the cursor's stays a value
