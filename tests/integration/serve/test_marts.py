"""The typed mart fields over real PostgreSQL marts written by the real sink: pages in key order equal to
independent SQL (money exact to the cent), types from the marts' columns, row filters from claims, column
access per role, and the depth, cost and row limits refusing before any SQL runs."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from cdcwh.serve.store import UNIQUE_SQL
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


def walk(client: Client, query: str, field: str) -> tuple[list[dict[str, Any]], int]:
    """Every node of ``field``, page by page (``query`` takes ``$a``, the cursor)."""
    nodes: list[dict[str, Any]] = []
    after, count = None, 0
    while True:
        response = client.post(query, {"a": after}, token("analyst"))
        if response.status_code == 429:  # a quick walk can pass 50 requests/s: wait as the API says
            time.sleep(float(response.headers["Retry-After"]))
            continue
        body = response.json()
        assert "errors" not in body, body
        page = body["data"][field]
        nodes.extend(page["nodes"])
        count += 1
        if not page["pageInfo"]["hasNextPage"]:
            return nodes, count
        after = page["pageInfo"]["endCursor"]


def test_pages_on_a_date_key_and_on_a_key_cut_by_the_marts_primary_key(
    api: Api, client: Client, pg_schema: str
) -> None:
    """dailyRevenue pages by its date; customer_profiles' key (customer_id) is unique in dim_customers only
    with its is_current filter, so its pages are cut by the mart's primary key (customer_id, version)."""
    s = sql.Identifier(pg_schema).as_string()
    daily = (
        "query($a: String) { dailyRevenue(first: 2, after: $a) "
        "{ nodes { orderDate revenue } pageInfo { endCursor hasNextPage } } }"
    )
    nodes, count = walk(client, daily, "dailyRevenue")
    expected = one(api.dsn, f"SELECT order_date::text, revenue::text FROM {s}.daily_revenue ORDER BY 1")
    assert [(n["orderDate"], n["revenue"]) for n in nodes] == [tuple(e) for e in expected]
    assert count == -(-len(expected) // 2) > 1
    profiles = (
        "query($a: String) { customerProfiles(first: 2, after: $a) "
        "{ nodes { customerId country } pageInfo { endCursor hasNextPage } } }"
    )
    nodes, count = walk(client, profiles, "customerProfiles")
    expected = one(
        api.dsn,
        f"SELECT customer_id, country FROM {s}.dim_customers WHERE is_current ORDER BY customer_id, version",
    )
    assert [(n["customerId"], n["country"]) for n in nodes] == [tuple(e) for e in expected]
    assert count == -(-len(expected) // 2) > 1
    aliased = client.post(
        "{ orders(first: 2) { nodes { id: orderId total: amount id2: orderId } } }", bearer=token("analyst")
    ).json()
    first = one(api.dsn, f"SELECT order_id, amount::text FROM {s}.orders ORDER BY 1 LIMIT 2")
    assert aliased["data"]["orders"]["nodes"] == [{"id": i, "total": a, "id2": i} for i, a in first]


def test_a_mart_without_a_unique_key_opens_no_measure_and_no_cursor(
    postgres_dsn: str, pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key nothing in PostgreSQL keeps unique: its rows may repeat it, so a measure's column is not what
    the aggregate by the key shows (closed), and a keyset cursor could skip rows (no paging)."""
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(PROJECT_ROOT / "schemas" / "semantic" / "shop.yml", model / "shop.yml")
    (model / "loose.yml").write_text(
        "entities:\n  loose:\n    mart: loose\n    primary_key: [id]\n"
        "    dimensions: {id: {column: id, type: number}, span: {column: span}}\n"
        "    measures: {total: {agg: sum, column: amount}}\n"
        "roles:\n  loose_reader: {members: [loose.*]}\n"
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
        table = sql.Identifier(pg_schema, "loose")
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint, amount numeric, span interval)").format(table))
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 2.5, '26 hours'), (1, 3.5, '26 hours'), (2, 1, NULL)").format(
                table
            )
        )
    with contextlib.contextmanager(running)(postgres_dsn, pg_schema, tmp_path, semantic_dir=model) as api:
        client = Client(api)
        reader = token("loose_reader", subject="loose")
        assert "entity loose: mart loose has no primary key or unique index" in caplog.text
        fields = client.post(TYPES, {"t": "Loose"}, reader).json()["data"]["__type"]["fields"]
        assert [f["name"] for f in fields] == ["id", "span"]  # amount's column not in the API at all
        page = client.post(
            "{ loose(first: 2) { nodes { id span } pageInfo { endCursor hasNextPage } } }", bearer=reader
        )
        assert page.json()["data"]["loose"] == {  # an interval as PostgreSQL writes it (not Python's str)
            "nodes": [{"id": 1, "span": "26:00:00"}, {"id": 1, "span": "26:00:00"}],
            "pageInfo": {"endCursor": None, "hasNextPage": True},
        }
        cursor = base64.urlsafe_b64encode(b"[1]").decode()
        refused = client.post(
            "query($a: String) { loose(after: $a) { nodes { id } } }", {"a": cursor}, reader
        )
        assert refused.json()["errors"][0]["message"] == (
            "loose rows are not paged (no primary key or unique index of mart loose cuts its key): "
            "only the first page is given"
        )
        client.http.close()


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


def test_the_columns_an_index_only_includes_do_not_count_as_unique(postgres_dsn: str, pg_schema: str) -> None:
    """``UNIQUE (a) INCLUDE (b)`` keeps a unique, not (a, b): read as (a) only (real PostgreSQL catalog)."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
        table = sql.Identifier(pg_schema, "covered")
        conn.execute(sql.SQL("CREATE TABLE {} (a bigint NOT NULL, b bigint NOT NULL)").format(table))
        conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (a) INCLUDE (b)").format(table))
        indexes = conn.execute(UNIQUE_SQL, (pg_schema,)).fetchall()
    assert indexes == [("covered", ["a"])]
