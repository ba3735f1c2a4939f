"""The GraphQL API over real PostgreSQL marts written by the real sink: answers equal independent SQL, row
filters from claims, 401/429, limits, the cache invalidated by the sink's announcement, and the access audit
holding every request."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from tests.integration.serve.shop import REVENUE_BY_DAY, Api, Client, audit_rows, one, token, wait_for, write


def test_analyst_revenue_by_day_equals_the_mart_and_independent_sql(
    api: Api, client: Client, pg_schema: str
) -> None:
    result = client.semantic(
        token("analyst"),
        measures=["daily_revenue.revenue", "daily_revenue.orders"],
        dimensions=[{"member": "daily_revenue.order_date", "granularity": "DAY"}],
    )
    assert result["columns"] == ["daily_revenue.order_date", "daily_revenue.revenue", "daily_revenue.orders"]
    got = [(row[0], row[1], row[2]) for row in result["rows"]]
    s = sql.Identifier(pg_schema).as_string()
    independent = one(
        api.dsn,
        f"""SELECT o.order_date::text, coalesce(sum(i.revenue), 0)::text, count(*)
        FROM {s}.orders o LEFT JOIN (SELECT order_id, sum(line_amount) AS revenue
          FROM {s}.fact_order_items GROUP BY order_id) i USING (order_id)
        WHERE o.status IN ('placed', 'shipped', 'completed') GROUP BY 1 ORDER BY 1""",
    )
    mart = one(api.dsn, f"SELECT order_date::text, revenue::text, orders FROM {s}.daily_revenue ORDER BY 1")
    assert len(got) >= 3
    assert got == [tuple(r) for r in independent] == [tuple(r) for r in mart]
    assert result["marts"] == ["daily_revenue"]
    audit = audit_rows(api.dsn, api.settings.postgres.audit_schema)
    wait_for(lambda: audit_rows(api.dsn, api.settings.postgres.audit_schema), what="the audit row")
    audit = audit_rows(api.dsn, api.settings.postgres.audit_schema)
    assert audit[0]["subject"] == "tester" and audit[0]["roles"] == ["analyst"]
    assert audit[0]["marts"] == ["daily_revenue"] and audit[0]["rows_returned"] == len(got)
    assert audit[0]["status"] == "ok" and len(audit[0]["operation_hash"]) == 64


def test_a_country_token_sees_only_its_countrys_customers(api: Api, client: Client, pg_schema: str) -> None:
    s = sql.Identifier(pg_schema).as_string()
    german = token("analyst", country="DE")
    result = client.semantic(
        german,
        measures=["customers.customers"],
        dimensions=[{"member": "customers.segment"}, {"member": "customer_profiles.country"}],
    )
    expected = one(
        api.dsn,
        f"""SELECT c.segment, d.country, count(*) FROM {s}.customers c JOIN {s}.dim_customers d
        ON d.customer_id = c.customer_id AND d.is_current WHERE d.country = 'DE'
        GROUP BY 1, 2 ORDER BY 1, 2""",
    )
    assert expected and [tuple(r) for r in result["rows"]] == [tuple(r) for r in expected]
    everyone = client.semantic(token("analyst"), measures=["customers.customers"])
    assert everyone["rows"] == [[len(api.shop.customers)]]
    # orders are filtered through their customer too
    orders = client.semantic(german, measures=["orders.orders"])
    (german_orders,) = one(
        api.dsn,
        f"""SELECT count(*) FROM {s}.orders o JOIN {s}.dim_customers d ON d.customer_id = o.customer_id
        AND d.is_current WHERE d.country = 'DE'""",
    )[0:1]
    assert orders["rows"] == [[german_orders[0]]] and german_orders[0] < len(api.shop.orders)
    # what cannot be restricted to a country is refused, saying nothing about the data
    refused = client.post(REVENUE_BY_DAY, {"q": {"measures": ["daily_revenue.revenue"]}}, german).json()
    assert refused["data"] is None and refused["errors"][0]["message"] == "not permitted for this token"
    # a role that requires the claim refuses a token without it
    manager = client.post(
        REVENUE_BY_DAY, {"q": {"measures": ["orders.orders"]}}, token("country_manager")
    ).json()
    assert manager["errors"][0]["message"] == "not permitted for this token"


def test_no_or_bad_token_is_401(api: Api, client: Client) -> None:
    query = {"q": {"measures": ["daily_revenue.revenue"]}}
    for bearer in (None, "not-a-jwt", token("analyst", ttl_s=-10)):
        response = client.post(REVENUE_BY_DAY, query, bearer)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "revenue" not in response.text
    # a body without its length, or too long, is refused before it is read
    big = client.http.post(
        "/graphql",
        content=b"{" + b" " * 300_000 + b"}",
        headers={"Authorization": f"Bearer {token('analyst')}"},
    )
    client.sent += 1
    assert big.status_code == 413
    from cdcwh.serve.auth import issue

    forged = issue(
        "another-secret-0123456789abcdef-01234", subject="x", roles=["analyst"], claims={}, ttl_s=60
    )
    assert client.post(REVENUE_BY_DAY, query, forged).status_code == 401
    wait_for(lambda: len(audit_rows(api.dsn, api.settings.postgres.audit_schema)) >= 5, what="audit rows")
    rows = audit_rows(api.dsn, api.settings.postgres.audit_schema)
    assert sorted(r["status"] for r in rows) == ["error"] + ["unauthorized"] * 4
    assert all(r["error"].startswith("unauthorized: ") for r in rows if r["status"] == "unauthorized")
    assert [r["error"] for r in rows if r["status"] == "error"] == ["request body too large"]


def test_a_refused_query_has_its_error_in_the_audit(api: Api, client: Client) -> None:
    body = client.post(REVENUE_BY_DAY, {"q": {"measures": ["orders.nothing"]}}, token("analyst")).json()
    message = body["errors"][0]["message"]
    rows = wait_for(lambda: audit_rows(api.dsn, api.settings.postgres.audit_schema), what="the audit row")
    assert [(r["status"], r["error"]) for r in rows] == [("denied", message)]


@pytest.mark.parametrize("api", [{"rate_limit": "5/minute"}], indirect=True)
def test_a_flood_gets_429_with_retry_after(api: Api, client: Client) -> None:
    flooder, other = token("analyst", subject="flooder"), token("analyst", subject="other")
    codes = [client.post("{ members { name } }", bearer=flooder).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    limited = client.post("{ members { name } }", bearer=flooder)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.post("{ members { name } }", bearer=other).status_code == 200  # per subject


@pytest.mark.parametrize("api", [{"client_rate_limit": "4/minute"}], indirect=True)
def test_a_flood_without_a_token_is_limited_by_address(api: Api, client: Client) -> None:
    codes = [client.post("{ members { name } }", bearer="forged").status_code for _ in range(5)]
    assert codes == [401] * 4 + [429]
    assert client.post("{ members { name } }", bearer=token("analyst")).status_code == 429  # same address


@pytest.mark.parametrize("api", [{"max_rows": 3, "max_tokens": 120}], indirect=True)
def test_depth_complexity_and_row_limits_refuse(api: Api, client: Client) -> None:
    analyst = token("analyst")
    by_day = {"measures": ["order_items.revenue"], "dimensions": [{"member": "order_items.order_date"}]}
    too_many = client.post(REVENUE_BY_DAY, {"q": by_day}, analyst).json()
    assert "more than 3 rows (serve.max_rows)" in too_many["errors"][0]["message"]
    limited = client.semantic(analyst, **by_day, limit=2)
    assert len(limited["rows"]) == 2 and limited["hasMore"] is True
    over = client.post(REVENUE_BY_DAY, {"q": {**by_day, "limit": 4}}, analyst).json()
    assert "limit must be between 1 and 3" in over["errors"][0]["message"]
    # the schema is one level deep (serve.max_depth guards what may come); the document's size and its
    # aliases bound how much one request may ask for
    long = "{ " + " ".join(["members { name }"] * 40) + " }"
    assert "more than 120 tokens" in client.post(long, bearer=analyst).json()["errors"][0]["message"]
    aliases = "{ " + " ".join(f"a{i}: members {{ name }}" for i in range(11)) + " }"
    refused = client.post(aliases, bearer=analyst).json()
    assert refused["data"] is None and "aliases" in refused["errors"][0]["message"]


def test_cache_hits_until_the_sink_announces_a_new_version(api: Api, client: Client, pg_schema: str) -> None:
    analyst = token("analyst")
    query = {"measures": ["daily_revenue.revenue"]}
    first = client.semantic(analyst, **query)
    second = client.semantic(analyst, **query)
    assert first["cached"] is False and second["cached"] is True and first["rows"] == second["rows"]
    other = client.semantic(analyst, measures=["orders.orders"])  # another mart: unaffected below
    assert other["cached"] is False
    api.shop.add_order(100, 1, next(iter(api.shop.orders.values()))["order_date"], "placed", [(3, "1000.00")])
    write(api.dsn, pg_schema, api.shop)
    (expected,) = one(
        api.dsn, f"SELECT sum(revenue)::text FROM {sql.Identifier(pg_schema).as_string()}.daily_revenue"
    )

    def fresh() -> dict[str, Any] | None:
        answer = client.semantic(analyst, **query)
        return answer if answer["rows"] == [[expected[0]]] else None

    answer = wait_for(fresh, what="the new revenue")
    assert answer["cached"] is False and expected[0] != first["rows"][0][0]
    assert client.semantic(analyst, **query)["cached"] is True
