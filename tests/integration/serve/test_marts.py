"""The typed mart fields over real PostgreSQL marts written by the real sink: pages in key order equal to
independent SQL (money exact to the cent), types from the marts' columns, row filters from claims, column
access per role, and the depth, cost and row limits refusing before any SQL runs."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from tests.integration.serve.shop import Api, Client, audit_rows, one, running, token, wait_for

ORDERS = (
    "query($n: Int!, $a: String) { orders(first: $n, after: $a) "
    "{ nodes { orderId status amount orderDate } pageInfo { endCursor hasNextPage } } }"
)


def pages(client: Client, bearer: str, first: int) -> tuple[list[dict[str, Any]], int]:
    nodes: list[dict[str, Any]] = []
    after, count = None, 0
    while True:
        body = client.post(ORDERS, {"n": first, "a": after}, bearer).json()
        assert "errors" not in body, body
        page = body["data"]["orders"]
        nodes.extend(page["nodes"])
        count += 1
        if not page["pageInfo"]["hasNextPage"]:
            return nodes, count
        after = page["pageInfo"]["endCursor"]


def test_orders_page_by_key_typed_and_exact(api: Api, client: Client, pg_schema: str) -> None:
    s = sql.Identifier(pg_schema).as_string()
    nodes, count = pages(client, token("analyst"), 7)
    expected = one(
        api.dsn, f"SELECT order_id, status, amount::text, order_date::text FROM {s}.orders ORDER BY order_id"
    )
    assert count == -(-len(expected) // 7)  # ceil: full pages, then the rest
    got = [(n["orderId"], n["status"], n["amount"], n["orderDate"]) for n in nodes]
    assert got == [tuple(e) for e in expected]
    assert any(not amount.endswith(".00") for _, _, amount, _ in got)  # cents, as text: exact
    german = one(
        api.dsn,
        f"""SELECT o.order_id FROM {s}.orders o JOIN {s}.dim_customers d ON d.customer_id = o.customer_id
        AND d.is_current WHERE d.country = 'DE' ORDER BY 1""",
    )
    nodes, _ = pages(client, token("analyst", country="DE"), 2)
    assert [n["orderId"] for n in nodes] == [g[0] for g in german] and german
    for key in ("not a cursor", ["abc"], [True], [None], [1, 2]):
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
        bad = client.post(ORDERS, {"n": 5, "a": cursor}, token("analyst")).json()
        assert bad["errors"][0]["message"] == "not a cursor of this API", key
    daily = "query($a: String) { dailyRevenue(first: 2, after: $a) { nodes { orderDate } } }"
    for key in (["zz"], [None], [3]):
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
        bad = client.post(daily, {"a": cursor}, token("analyst")).json()
        assert bad["errors"][0]["message"] == "not a cursor of this API", key


TYPES = """query($t: String!) { __type(name: $t) { fields { name type { name kind } } } }"""


def test_field_types_follow_the_mart_columns(api: Api, client: Client, pg_schema: str) -> None:
    analyst = token("analyst")

    def fields(type_name: str) -> dict[str, str]:
        body = client.post(TYPES, {"t": type_name}, analyst).json()
        return {f["name"]: f["type"]["name"] for f in body["data"]["__type"]["fields"]}

    data_types = dict(
        one(
            api.dsn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'orders'",
            pg_schema,
        )
    )
    scalar = {"bigint": "BigInt", "integer": "Int", "numeric": "Decimal", "date": "Date", "text": "String"}
    orders = fields("Orders")
    assert orders["amount"] == "Decimal" == scalar[data_types["amount"]]
    assert orders["orderDate"] == "Date" == scalar[data_types["order_date"]]
    assert orders["orderId"] == scalar[data_types["order_id"]]
    assert orders["status"] == "String"
    assert "customerId" not in orders  # a join key, neither dimension nor measure: not in the API
    daily = fields("DailyRevenue")
    assert set(daily) == {"orderDate", "revenue", "orders", "itemsSold"} and daily["revenue"] == "Decimal"
    # a filtered measure's column (revenue of qualifying lines only) opens no rows
    assert "lineAmount" not in fields("OrderItems") and "quantity" not in fields("OrderItems")


def test_dashboard_reads_daily_revenue_rows_but_no_order_rows(
    api: Api, client: Client, pg_schema: str
) -> None:
    """``dashboard`` may read daily_revenue's key and measures (the rows equal its revenue by day), not the
    order ids that key orders: no order rows."""
    dashboard = token("dashboard")
    query = "{ dailyRevenue(first: 50) { nodes { orderDate revenue orders itemsSold } } }"
    body = client.post(query, bearer=dashboard).json()
    assert "errors" not in body, body
    s = sql.Identifier(pg_schema).as_string()
    expected = one(
        api.dsn,
        f"SELECT order_date::text, revenue::text, orders, items_sold FROM {s}.daily_revenue ORDER BY 1",
    )
    got = [
        (n["orderDate"], n["revenue"], n["orders"], n["itemsSold"])
        for n in body["data"]["dailyRevenue"]["nodes"]
    ]
    assert got == [tuple(e) for e in expected] and got
    refused = client.post("{ orders { nodes { status } } }", bearer=dashboard).json()
    assert refused["data"] is None
    assert refused["errors"][0]["message"] == "unknown or not permitted entity 'orders'"


def test_a_column_the_role_may_not_read_is_refused_before_sql(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(PROJECT_ROOT / "schemas" / "semantic" / "shop.yml", model / "shop.yml")
    with (model / "shop.yml").open("a") as out:
        out.write("  clerk:\n    members: [orders.order_id, orders.status]\n")
    with contextlib.contextmanager(running)(postgres_dsn, pg_schema, tmp_path, semantic_dir=model) as api:
        client = Client(api)
        clerk = token("clerk", subject="clerk")
        allowed = client.post("{ orders(first: 3) { nodes { orderId status } } }", bearer=clerk).json()
        assert [n["orderId"] for n in allowed["data"]["orders"]["nodes"]] == [1, 2, 3]
        before = warehouse_runs()
        fragment = "fragment f on Orders { status amount } { orders(first: 3) { nodes { orderId ...f } } }"
        refused = client.post(fragment, bearer=clerk).json()
        assert refused["data"] is None
        assert refused["errors"][0]["message"] == "not permitted: Orders.amount"
        # an allowed field beside a refused one: neither runs
        mixed = "{ a: orders(first: 2) { nodes { orderId } } b: orders(first: 3) { nodes { amount } } }"
        refused = client.post(mixed, bearer=clerk).json()
        assert refused["data"] is None and refused["errors"][0]["message"] == "not permitted: Orders.amount"
        members = "{ members { name } orders(first: 1) { nodes { amount } } }"
        assert client.post(members, bearer=clerk).json()["data"] is None
        assert warehouse_runs() == before  # nothing refused reached the warehouse
        # @skip/@include decide what is selected
        directed = "query($x: Boolean!) { orders(first: 2) { nodes { orderId amount @include(if: $x) } } }"
        included = client.post(directed, {"x": True}, bearer=clerk).json()
        assert included["errors"][0]["message"] == "not permitted: Orders.amount"
        assert warehouse_runs() == before
        skipped = client.post(directed, {"x": False}, bearer=clerk).json()
        assert skipped["data"]["orders"]["nodes"] == [{"orderId": 1}, {"orderId": 2}]
        assert warehouse_runs() == before + 1
        rows = wait_for(
            lambda: len(r := audit_rows(api.dsn, api.settings.postgres.audit_schema)) >= 6 and r, what="audit"
        )
        denied = [r for r in rows if r["status"] == "denied"]
        assert len(denied) == 4 and all(d["rows_returned"] == 0 and not d["marts"] for d in denied)
        client.http.close()


def warehouse_runs() -> float:
    """The API's queries so far (each counts a cache hit or miss before it would reach PostgreSQL)."""
    samples = (REGISTRY.get_sample_value("cdcwh_api_cache_total", {"result": r}) for r in ("hit", "miss"))
    return sum(value or 0.0 for value in samples)


@pytest.mark.parametrize("api", [{"max_cost": 500, "max_rows": 400}], indirect=True)
def test_cost_and_row_limits_refuse_before_any_sql(api: Api, client: Client) -> None:
    analyst = token("analyst")
    before = warehouse_runs()
    costly = client.post("{ orders(first: 200) { nodes { orderId status amount } } }", bearer=analyst).json()
    assert costly["data"] is None
    assert costly["errors"][0]["message"] == (
        "the query costs 600, more than 500 (serve.max_cost): "
        "ask for fewer rows (first, limit) or fewer fields"
    )
    # the same through a variable, a fragment, an inline fragment and an alias on a node field
    spread = (
        "query($n: Int!) { orders(first: $n) { nodes { ...f ... on Orders { again: orderId } } } } "
        "fragment f on Orders { orderId status }"
    )
    assert "the query costs 600," in client.post(spread, {"n": 200}, analyst).json()["errors"][0]["message"]
    # a field @skip leaves out costs nothing
    skipped = "query($s: Boolean!) { orders(first: 300) { nodes { orderId status @skip(if: $s) } } }"
    assert (
        client.post(skipped, {"s": False}, analyst)
        .json()["errors"][0]["message"]
        .startswith("the query costs 600,")
    )
    semantic = 'semantic(query: {measures: ["orders.orders"], dimensions: [{member: "orders.status"}]})'
    aliased = "{ " + " ".join(f"a{i}: {semantic} {{ rows }}" for i in range(7)) + " }"  # 7 x 400 x 2 / 10
    assert "the query costs 560," in client.post(aliased, bearer=analyst).json()["errors"][0]["message"]
    over = client.post("{ orders(first: 401) { nodes { orderId } } }", bearer=analyst).json()
    assert over["errors"][0]["message"] == "first must be between 1 and 400 (serve.max_rows)"
    assert warehouse_runs() == before  # nothing refused reached the warehouse
    fine = client.post("{ orders(first: 30) { nodes { orderId status amount } } }", bearer=analyst).json()
    assert len(fine["data"]["orders"]["nodes"]) == 18 and warehouse_runs() == before + 1
    runs = client.post(skipped, {"s": True}, analyst).json()  # 300 x 1
    assert runs["data"]["orders"]["nodes"][0] == {"orderId": 1} and warehouse_runs() == before + 2


def test_a_query_too_deep_is_refused_before_any_sql(api: Api, client: Client) -> None:
    """The schema's own fields are at most two levels deep (``orders { nodes { orderId } }``, root fields at
    0; ``serve.max_depth`` may not go below 2); a document nine levels deep is refused at the default 8
    whatever else is wrong with it, before any SQL runs."""
    analyst = token("analyst")
    before = warehouse_runs()
    nested = "orderId " + "".join("{ x " for _ in range(7)) + "}" * 7
    deep = client.post(f"{{ orders(first: 1) {{ nodes {{ {nested} }} }} }}", bearer=analyst).json()
    assert deep["data"] is None
    messages = [e["message"] for e in deep["errors"]]
    assert "'anonymous' exceeds maximum operation depth of 8" in messages, messages
    assert warehouse_runs() == before
    fine = client.post("{ orders(first: 1) { nodes { orderId } } }", bearer=analyst).json()
    assert fine["data"]["orders"]["nodes"] == [{"orderId": 1}] and warehouse_runs() == before + 1


def test_max_depth_below_the_typed_fields_is_refused() -> None:
    from pydantic import ValidationError

    from cdcwh.config import ServeSettings

    with pytest.raises(ValidationError, match="max_depth"):
        ServeSettings(max_depth=1)
