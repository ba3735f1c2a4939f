"""The semantic model loads and is checked with errors naming file and line; the compiler quotes identifiers
from the model, binds every client value, and applies roles and row filters."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cdcwh.config import PROJECT_ROOT
from cdcwh.errors import ConfigError
from cdcwh.serve.compile import (
    DimensionRef,
    Filter,
    NotPermitted,
    Order,
    Principal,
    QueryError,
    SemanticQuery,
    compile_query,
)
from cdcwh.serve.model import SemanticModel, load_model

SHIPPED = PROJECT_ROOT / "schemas" / "semantic"
ANALYST = Principal("ann", ("analyst",))


@pytest.fixture(scope="module")
def model() -> SemanticModel:
    return load_model(SHIPPED)


def test_shipped_model_covers_the_shop_metrics(model: SemanticModel) -> None:
    for ref in (
        "daily_revenue.revenue",
        "orders.orders",
        "order_items.items_sold",
        "orders.average_order_value",
        "customers.lifetime_value",
        "customer_profiles.country",
        "customers.segment",
    ):
        model.member(ref)
    assert model.marts() >= {"daily_revenue", "orders", "fact_order_items", "customers", "dim_customers"}


def test_a_bad_field_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "m.yml").write_text(
        "entities:\n  e:\n    mart: orders\n    measures:\n      m: {agg: median, column: amount}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path)
    assert f"{tmp_path / 'm.yml'}:5:" in str(info.value)
    assert "entities.e.measures.m.agg" in str(info.value)


def test_a_duplicate_entity_and_an_unknown_join_name_both_places(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "shop.yml", tmp_path / "a.yml")
    (tmp_path / "b.yml").write_text(
        "\nentities:\n  orders: {mart: orders, primary_key: [a]}\n"
        "  x:\n    mart: orders\n    primary_key: [a]\n    joins:\n"
        "      y: {entity: nowhere, keys: {a: b}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'b.yml'}:3: entity orders is already defined at {tmp_path / 'a.yml'}:" in message
    assert f"{tmp_path / 'b.yml'}:4: entity x: join y: no entity nowhere" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.yml").write_text("entities:\n  e: [\n")
    with pytest.raises(ConfigError, match=r"m\.yml:3: not valid YAML"):
        load_model(tmp_path)


def test_client_values_are_parameters_never_sql(model: SemanticModel) -> None:
    evil = "x'); DROP TABLE marts.orders; --"
    query = SemanticQuery(
        measures=("orders.amount",),
        dimensions=(DimensionRef("orders.order_date", "month"), DimensionRef("orders.status")),
        filters=(Filter("orders.status", "equals", (evil,)),),
        order=(Order("orders.amount", descending=True),),
        limit=10,
    )
    compiled = compile_query(model, query, ANALYST, schema="marts", max_rows=100)
    text = compiled.key()
    assert evil not in text and "DROP" not in text
    assert evil in compiled.params
    assert compiled.params[-1] == 11  # one more than the limit, to tell there were more
    assert "date_trunc('month'" in text and 'FROM "marts"."orders"' in text
    assert compiled.columns == ("orders.order_date", "orders.status", "orders.amount")
    assert compiled.marts == {"orders"}


def test_unknown_and_forbidden_members_fail_alike(model: SemanticModel) -> None:
    dashboard = Principal("d", ("dashboard",))
    messages = []
    for ref in ("orders.nonexistent", "customers.lifetime_value"):
        with pytest.raises(NotPermitted) as info:
            compile_query(model, SemanticQuery(measures=(ref,)), dashboard, schema="m", max_rows=10)
        messages.append(str(info.value).replace(ref, "?"))
    assert messages[0] == messages[1]


def test_row_filter_from_a_claim_joins_the_dimension(model: SemanticModel) -> None:
    german = Principal("g", ("analyst",), {"country": "DE"})
    compiled = compile_query(
        model, SemanticQuery(measures=("customers.customers",)), german, schema="m", max_rows=10
    )
    text = compiled.key()
    assert 'LEFT JOIN "m"."dim_customers"' in text and '"country" = %s' in text
    assert "DE" in compiled.params and True in compiled.params  # the profile's is_current condition
    assert compiled.marts == {"customers", "dim_customers"}
    # without the claim, an analyst's query is not filtered
    plain = compile_query(
        model, SemanticQuery(measures=("customers.customers",)), ANALYST, schema="m", max_rows=9
    )
    assert "dim_customers" not in plain.key()


def test_row_filter_refuses_what_it_cannot_restrict(model: SemanticModel) -> None:
    german = Principal("g", ("analyst",), {"country": "DE"})
    with pytest.raises(NotPermitted):  # daily_revenue has no customer to filter on
        compile_query(
            model, SemanticQuery(measures=("daily_revenue.revenue",)), german, schema="m", max_rows=9
        )
    # an exempt entity is read unfiltered
    compile_query(model, SemanticQuery(measures=("products.products",)), german, schema="m", max_rows=9)
    manager = Principal("m", ("country_manager",))  # the claim is required for this role
    with pytest.raises(NotPermitted):
        compile_query(model, SemanticQuery(measures=("orders.orders",)), manager, schema="m", max_rows=9)


def test_limits_and_shape_errors(model: SemanticModel) -> None:
    with pytest.raises(QueryError, match="serve.max_rows"):
        compile_query(
            model, SemanticQuery(measures=("orders.orders",), limit=11), ANALYST, schema="m", max_rows=10
        )
    with pytest.raises(QueryError, match="one entity"):
        compile_query(
            model,
            SemanticQuery(measures=("orders.orders", "customers.customers")),
            ANALYST,
            schema="m",
            max_rows=10,
        )
    with pytest.raises(QueryError, match="not a time dimension"):
        compile_query(
            model,
            SemanticQuery(measures=("orders.orders",), dimensions=(DimensionRef("orders.status", "day"),)),
            ANALYST,
            schema="m",
            max_rows=10,
        )
    with pytest.raises(QueryError, match="only a selected member"):
        compile_query(
            model,
            SemanticQuery(measures=("orders.orders",), order=(Order("orders.amount"),)),
            ANALYST,
            schema="m",
            max_rows=10,
        )


def test_a_filter_takes_at_most_500_values(model: SemanticModel) -> None:
    values = tuple(str(i) for i in range(501))
    query = SemanticQuery(measures=("orders.orders",), filters=(Filter("orders.status", "in", values),))
    with pytest.raises(QueryError, match="more than 500 values"):
        compile_query(model, query, ANALYST, schema="m", max_rows=10)
    compiled = compile_query(
        model,
        SemanticQuery(measures=("orders.orders",), filters=(Filter("orders.status", "in", values[:500]),)),
        ANALYST,
        schema="m",
        max_rows=10,
    )
    assert compiled.key().count("%s") == 501  # the values and the limit


def test_a_cursor_of_anything_but_scalars_is_refused() -> None:
    import base64
    import json

    from cdcwh.serve.rows import decode_cursor

    for key in ([{"a": 1}], [[1]], {"k": 1}, [1, 2]):
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
        with pytest.raises(QueryError, match="not a cursor of this API"):
            decode_cursor(cursor, ["text"])
    assert decode_cursor(base64.urlsafe_b64encode(b'["x"]').decode(), ["text"]) == ["x"]
