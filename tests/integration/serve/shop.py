"""A small shop written to real PostgreSQL marts by the real sink (``PostgresMartSink``) from a gold change
feed built here, and the API running in-process (uvicorn in a thread) over them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import psycopg
import uvicorn
from psycopg import sql

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.goldfeed import GoldChange
from cdcwh.serve.auth import issue
from cdcwh.sink.postgres import PostgresMartSink
from tests.plugins.secrets import JWT_SECRET

SECRET = JWT_SECRET  # the canary: the session's secret sweep fails the run if it is ever written out
COUNTRIES = ("DE", "FR", "US")
SEGMENTS = ("consumer", "corporate")
STATUSES = ("placed", "shipped", "completed", "cancelled", "returned")
QUALIFYING = ("placed", "shipped", "completed")
T = TypeVar("T")


@dataclass
class Shop:
    """The source-side state, and the gold changes that state implies (versions always increasing)."""

    version: int = 0
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add_customer(self, customer_id: int, country: str, segment: str) -> None:
        self.customers[customer_id] = {"country": country, "segment": segment}

    def add_order(
        self, order_id: int, customer_id: int, day: date, status: str, lines: list[tuple[int, str]]
    ) -> None:
        self.orders[order_id] = {"customer_id": customer_id, "order_date": day, "status": status}
        for quantity, price in lines:
            item_id = len(self.items) + 1
            self.items[item_id] = {"order_id": order_id, "quantity": quantity, "unit_price": Decimal(price)}

    def changes(self) -> list[GoldChange]:
        """Upserts of every row of the marts the API reads, at a new version."""
        self.version += 1
        v = self.version
        out: list[GoldChange] = []
        line_totals: dict[int, tuple[int, Decimal]] = {}
        for item_id, item in self.items.items():
            order = self.orders[item["order_id"]]
            amount = item["quantity"] * item["unit_price"]
            quantity, total = line_totals.get(item["order_id"], (0, Decimal(0)))
            line_totals[item["order_id"]] = (quantity + item["quantity"], total + amount)
            row = {
                "order_item_id": item_id,
                "order_id": item["order_id"],
                "customer_id": order["customer_id"],
                "product_id": 1,
                "order_date": order["order_date"].isoformat(),
                "status": order["status"],
                "quantity": item["quantity"],
                "unit_price": str(item["unit_price"]),
                "line_amount": str(amount),
            }
            out.append(_upsert("fact_order_items", v, {"order_item_id": item_id}, row))
        for order_id, order in self.orders.items():
            amount = str(line_totals.get(order_id, (0, Decimal(0)))[1])
            row = {
                "order_id": order_id,
                "customer_id": order["customer_id"],
                "order_date": order["order_date"].isoformat(),
                "status": order["status"],
                "credit_card_amount": amount,
                "coupon_amount": "0",
                "bank_transfer_amount": "0",
                "gift_card_amount": "0",
                "amount": amount,
            }
            out.append(_upsert("orders", v, {"order_id": order_id}, row))
        days: dict[date, list[Any]] = {}
        for order_id, order in self.orders.items():
            if order["status"] in QUALIFYING:
                quantity, total = line_totals.get(order_id, (0, Decimal(0)))
                day = days.setdefault(order["order_date"], [0, 0, Decimal(0)])
                day[0], day[1], day[2] = day[0] + 1, day[1] + quantity, day[2] + total
        for day_, (orders, items, revenue) in days.items():
            row = {
                "order_date": day_.isoformat(),
                "orders": orders,
                "items_sold": items,
                "revenue": str(revenue),
            }
            out.append(_upsert("daily_revenue", v, {"order_date": day_.isoformat()}, row))
        for customer_id, customer in self.customers.items():
            mine = [o for o in self.orders.values() if o["customer_id"] == customer_id]
            row = {
                "customer_id": customer_id,
                "first_name": "F",
                "last_name": "L",
                "email": f"c{customer_id}@example.com",
                "segment": customer["segment"],
                "first_order_date": min((o["order_date"] for o in mine), default=None),
                "most_recent_order_date": max((o["order_date"] for o in mine), default=None),
                "number_of_orders": len(mine),
                "lifetime_value": "0",
            }
            for key in ("first_order_date", "most_recent_order_date"):
                row[key] = row[key].isoformat() if row[key] else None
            out.append(_upsert("customers", v, {"customer_id": customer_id}, row))
            profile = {
                "customer_id": customer_id,
                "version": 1,
                "email": row["email"],
                "segment": customer["segment"],
                "country": customer["country"],
                "valid_from": "2024-01-01T00:00:00+00:00",
                "valid_to": None,
                "is_current": True,
            }
            out.append(_upsert("dim_customers", v, {"customer_id": customer_id, "version": 1}, profile))
        return out


def _upsert(mart: str, version: int, key: dict[str, Any], row: dict[str, Any]) -> GoldChange:
    return GoldChange(mart, "upsert", version, json.dumps(key, separators=(",", ":")), row, None)


def small_shop() -> Shop:
    shop = Shop()
    for customer_id in range(1, 7):
        shop.add_customer(customer_id, COUNTRIES[customer_id % 3], SEGMENTS[customer_id % 2])
    start = date(2024, 3, 1)
    for order_id in range(1, 19):
        day = start + timedelta(days=order_id % 4)
        lines = [(1 + order_id % 3, "9.99"), (2, f"{order_id}.50")] if order_id % 5 else []
        shop.add_order(order_id, 1 + order_id % 6, day, STATUSES[order_id % 5], lines)
    return shop


def write(dsn: str, schema: str, shop: Shop) -> None:
    """Apply the shop's changes with the real sink (which announces the new mart versions at commit)."""
    sink = PostgresMartSink(dsn, schema, PROJECT_ROOT / "sql")
    try:
        sink.apply(shop.changes())
    finally:
        sink.close()


def token(*roles: str, subject: str = "tester", ttl_s: int = 600, **claims: Any) -> str:
    return issue(SECRET, subject=subject, roles=roles, claims=claims, ttl_s=ttl_s)


def api_settings(tmp: Any, schema: str, **serve: Any) -> Settings:
    return Settings(
        data_dir=tmp,
        postgres={"schema": schema, "audit_schema": f"{schema}_audit"},
        serve={"jwt_secret": SECRET, **serve},
    )


class RunningApi:
    """The app served by uvicorn on a free port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.app = app

    def __enter__(self) -> RunningApi:
        self.thread.start()
        wait_for(lambda: self.server.started or None, what="the API to start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_for(probe: Callable[[], T | None], *, what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def audit_rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(
            sql.SQL(
                "SELECT subject, roles, status, marts, rows_returned, operation, operation_hash, error "
                "FROM {}"
            ).format(sql.Identifier(schema, "api_access"))
        )
        names = [c.name for c in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class Api:
    url: str
    settings: Settings
    dsn: str
    shop: Shop


def running(dsn: str, schema: str, tmp: Any, **serve: Any) -> Iterator[Api]:
    from cdcwh.serve.app import build_app

    shop = small_shop()
    write(dsn, schema, shop)
    settings = api_settings(tmp, schema, **serve)
    app = build_app(settings, reader_dsn=dsn, audit_dsn=dsn)
    try:
        with RunningApi(app) as api:
            yield Api(api.url, settings, dsn, shop)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{schema}_audit"))
            )


REVENUE_BY_DAY = (
    """query($q: SemanticQueryInput!) { semantic(query: $q) { columns rows marts hasMore cached } }"""
)


class Client:
    """An HTTP client of the API that counts its requests (the audit must hold each of them)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.http = httpx.Client(base_url=api.url, timeout=30)
        self.sent = 0

    def post(
        self, query: str, variables: dict[str, Any] | None = None, bearer: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        self.sent += 1
        return self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    def semantic(self, bearer: str, **query: Any) -> dict[str, Any]:
        response = self.post(REVENUE_BY_DAY, {"q": query}, bearer)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]["semantic"]
        return result


def one(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
