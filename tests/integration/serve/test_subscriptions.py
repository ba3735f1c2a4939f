"""Subscriptions over graphql-ws (the graphql-transport-ws subprotocol) against real PostgreSQL marts: the
answer now, then the new answer once the real sink commits a change (announced by its pg_notify); a
connection without a valid token is refused; pushes are audited."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.integration.serve.shop import Api, audit_rows, running, token, wait_for, write
from tests.support.marts import pg_mart_value

SUBSCRIPTION = "subscription($q: SemanticQueryInput!) { semantic(query: $q) { columns rows cached } }"
WAIT_S = 15.0


@pytest.fixture
def api(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> Iterator[Api]:
    yield from running(postgres_dsn, pg_schema, tmp_path)


@contextlib.contextmanager
def open_ws(api: Api, payload: dict[str, Any]) -> Iterator[ClientConnection]:
    url = api.url.replace("http", "ws") + "/graphql"
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        yield ws


def receive(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=WAIT_S))
        if message["type"] != "ping":
            return message


def revenue(dsn: str, schema: str) -> str:
    return str(pg_mart_value(dsn, schema, "daily_revenue", "sum(revenue)::text"))


def test_a_subscription_gets_the_new_answer_after_the_sink_commits(api: Api, pg_schema: str) -> None:
    with open_ws(api, {"token": token("dashboard", subject="screen")}) as ws:
        assert receive(ws)["type"] == "connection_ack"
        query = {"measures": ["daily_revenue.revenue"]}
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": {"q": query}},
                }
            )
        )
        first = receive(ws)
        assert first["type"] == "next", first
        assert first["payload"]["data"]["semantic"]["rows"] == [[revenue(api.dsn, pg_schema)]]
        before = revenue(api.dsn, pg_schema)
        day = next(iter(api.shop.orders.values()))["order_date"]
        api.shop.add_order(200, 2, day, "completed", [(4, "250.25")])
        write(api.dsn, pg_schema, api.shop)  # the sink's transaction commits, and announces
        after = revenue(api.dsn, pg_schema)
        pushed = receive(ws)
        assert pushed["type"] == "next", pushed
        assert pushed["payload"]["data"]["semantic"]["rows"] == [[after]] and after != before
    audit = wait_for(
        lambda: [r for r in audit_rows(api.dsn, api.settings.postgres.audit_schema) if r["status"] == "ok"][
            1:
        ],
        what="the audit of both pushes",
    )
    assert {(r["subject"], r["operation"], tuple(r["marts"])) for r in audit} == {
        ("screen", "subscription", ("daily_revenue",))
    }


def test_a_websocket_without_a_valid_token_is_refused(api: Api) -> None:
    for payload in ({}, {"token": "forged"}, {"token": token("dashboard", ttl_s=-5)}):
        with open_ws(api, payload) as ws, pytest.raises(ConnectionClosed) as info:
            receive(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    rows = wait_for(
        lambda: len(r := audit_rows(api.dsn, api.settings.postgres.audit_schema)) >= 3 and r,
        what="three audit rows",
    )
    assert [r["status"] for r in rows] == ["unauthorized"] * 3


def subscribe(ws: ClientConnection, op_id: str) -> None:
    query = {"measures": ["daily_revenue.revenue"]}
    payload = {"query": SUBSCRIPTION, "variables": {"q": query}}
    ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


def replies(ws: ClientConnection, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The first message of each operation in ``ids``."""
    first: dict[str, dict[str, Any]] = {}
    while set(first) != ids:
        message = receive(ws)
        first.setdefault(message["id"], message)
    return first


@pytest.mark.parametrize(
    ("serve", "refusal"),
    [
        ({"rate_limit": "2/minute"}, "too many requests"),
        ({"max_subscriptions": 2}, "serve.max_subscriptions"),
    ],
)
def test_each_subscribe_is_limited_on_one_connection(
    postgres_dsn: str, pg_schema: str, tmp_path: Path, serve: dict[str, Any], refusal: str
) -> None:
    with contextlib.contextmanager(running)(postgres_dsn, pg_schema, tmp_path, **serve) as api:
        with open_ws(api, {"token": token("dashboard", subject="greedy")}) as ws:
            assert receive(ws)["type"] == "connection_ack"
            for op_id in ("1", "2"):
                subscribe(ws, op_id)
            first = replies(ws, {"1", "2"})
            assert [first[i]["type"] for i in ("1", "2")] == ["next", "next"]
            subscribe(ws, "3")
            third = replies(ws, {"3"})["3"]
        assert third["payload"].get("data") is None and refusal in json.dumps(third["payload"]), third
        rows = wait_for(
            lambda: [
                r for r in audit_rows(api.dsn, api.settings.postgres.audit_schema) if r["status"] != "ok"
            ],
            what="the refusal's audit row",
        )
        assert [(r["subject"], r["operation"]) for r in rows] == [("greedy", "subscription")]


def test_a_subscription_costing_too_much_is_refused_before_any_sql(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A subscription's semantic query costs what a query's does: 40 rows x 1 value / 10 here."""
    with contextlib.contextmanager(running)(
        postgres_dsn, pg_schema, tmp_path, max_cost=3, max_rows=40
    ) as api:
        with open_ws(api, {"token": token("dashboard", subject="costly")}) as ws:
            assert receive(ws)["type"] == "connection_ack"
            subscribe(ws, "1")
            reply = replies(ws, {"1"})["1"]
        assert reply["type"] in {"error", "next"} and "errors" in json.dumps(reply["payload"]), reply
        assert "the query costs 4, more than 3 (serve.max_cost)" in json.dumps(reply["payload"])
        rows = wait_for(
            lambda: [
                r for r in audit_rows(api.dsn, api.settings.postgres.audit_schema) if r["subject"] == "costly"
            ],
            what="the refusal's audit row",
        )
        assert [(r["operation"], r["status"], r["marts"]) for r in rows] == [("subscription", "error", [])]


def test_the_connection_is_closed_when_the_token_expires(api: Api) -> None:
    with open_ws(api, {"token": token("dashboard", ttl_s=3)}) as ws:
        assert receive(ws)["type"] == "connection_ack"
        subscribe(ws, "1")
        assert receive(ws)["type"] == "next"
        with pytest.raises(ConnectionClosed) as info:
            receive(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403
