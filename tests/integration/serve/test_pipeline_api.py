"""The API end to end over the demo's data: shop changes produced to the real broker go through ingest,
transform and the sink (in this process; real Iceberg, DuckDB and PostgreSQL); the analyst's revenue by day
equals the pure-Python reference of ``daily_revenue``, a country-limited token sees that country's customers
only, and a subscription gets the new answer once more source changes reach PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from cdcwh.generate import ShopGenerator
from cdcwh.serve.app import build_app
from tests.integration.serve.shop import SECRET, RunningApi, token
from tests.support.marts import pg_mart_value
from tests.support.marts_reference import customer_changes_from, reference_marts
from tests.support.pipeline import settings_for
from tests.support.services import ingest_until_caught_up, sink_until_caught_up, transform_once
from tests.support.warehouse import produce_changes

QUERY = "query($q: SemanticQueryInput!) { semantic(query: $q) { rows } }"
SUBSCRIPTION = "subscription($q: SemanticQueryInput!) { semantic(query: $q) { rows } }"


def total_revenue(dsn: str, schema: str) -> str:
    return str(pg_mart_value(dsn, schema, "daily_revenue", "sum(revenue)::text"))


def test_the_api_over_the_pipelines_marts(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str, postgres_dsn: str, pg_schema: str
) -> None:
    settings = settings_for(
        tmp_path / "data",
        kafka_bootstrap,
        unique_prefix,
        postgres={"dsn": postgres_dsn, "schema": pg_schema, "audit_schema": f"{pg_schema}_audit"},
        serve={"jwt_secret": SECRET},
    )
    generator = ShopGenerator(23)
    changes = list(generator.changes(800))
    produce_changes(kafka_bootstrap, unique_prefix, changes)
    ingest_until_caught_up(settings)
    transform_once(settings)
    sink_until_caught_up(settings)
    reference = reference_marts(generator.expected_state(), customer_changes_from(changes))

    app = build_app(settings, reader_dsn=postgres_dsn, audit_dsn=postgres_dsn)
    with RunningApi(app) as api, httpx.Client(base_url=api.url, timeout=30) as http:

        def semantic(bearer: str, **q: object) -> list[list[object]]:
            response = http.post(
                "/graphql",
                json={"query": QUERY, "variables": {"q": q}},
                headers={"Authorization": f"Bearer {bearer}"},
            )
            body = response.json()
            assert "errors" not in body, body
            rows: list[list[object]] = body["data"]["semantic"]["rows"]
            return rows

        by_day = semantic(
            token("analyst"),
            measures=["daily_revenue.revenue", "daily_revenue.items_sold"],
            dimensions=[{"member": "daily_revenue.order_date"}],
        )
        expected = sorted(
            (d["order_date"].isoformat(), d["revenue"], d["items_sold"]) for d in reference["daily_revenue"]
        )
        assert len(expected) >= 2
        assert [(day, Decimal(str(revenue)), items) for day, revenue, items in by_day] == expected

        current = [p for p in reference["dim_customers"] if p["is_current"]]
        country, _ = Counter(p["country"] for p in current).most_common(1)[0]
        mine = semantic(
            token("analyst", country=country),
            measures=["customers.customers"],
            dimensions=[{"member": "customer_profiles.country"}],
        )
        existing = {c["customer_id"] for c in reference["customers"]}
        count = sum(1 for p in current if p["country"] == country and p["customer_id"] in existing)
        assert mine == [[country, count]] and count < len(existing)

        url = api.url.replace("http", "ws") + "/graphql"
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"token": token("dashboard")}}))
            assert json.loads(ws.recv(timeout=15))["type"] == "connection_ack"
            q = {"measures": ["daily_revenue.revenue"]}
            ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIPTION, "variables": {"q": q}},
                    }
                )
            )
            before = total_revenue(postgres_dsn, pg_schema)
            assert json.loads(ws.recv(timeout=15))["payload"]["data"]["semantic"]["rows"] == [[before]]
            more = list(generator.changes(400))
            produce_changes(kafka_bootstrap, unique_prefix, more)
            ingest_until_caught_up(settings)
            transform_once(settings)
            sink_until_caught_up(settings)
            after = total_revenue(postgres_dsn, pg_schema)
            assert after != before
            pushed = json.loads(ws.recv(timeout=15))
            assert pushed["payload"]["data"]["semantic"]["rows"] == [[after]]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{pg_schema}_audit")))
