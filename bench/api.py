"""The API section: a semantic query through ``cdcwh serve`` over HTTP (cached, and with the cache off),
and a page of the typed ``orders`` field (cache off), N concurrent clients, each vs a plain psycopg
``SELECT`` of the same compiled SQL by as many threads."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import ROOT, Bench, log, summary
from bench.sink import order_rows

QUERY = "query($q: SemanticQueryInput!) { semantic(query: $q) { rows cached } }"
SEMANTIC = {
    "measures": ["orders.amount", "orders.orders"],
    "dimensions": [{"member": "orders.status"}, {"member": "orders.order_date", "granularity": "MONTH"}],
}
PAGE = "{ orders(first: 100) { nodes { orderId status orderDate amount } pageInfo { endCursor } } }"
PAGE_COLUMNS = ["status", "order_date", "amount"]
SECRET = "bench-secret-0123456789abcdef-0123456789"  # noqa: S105 (the bench's own server)


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]


def fill(bench: Bench, schema: str, rows: int) -> None:
    from cdcwh.goldfeed import GoldChange
    from cdcwh.sink.postgres import PostgresMartSink

    sink = PostgresMartSink(bench.pg_dsn, schema, ROOT / "sql")
    data = order_rows(rows, version=1)
    changes = [
        GoldChange("orders", "upsert", 1, json.dumps({"order_id": r["order_id"]}), r, None) for r in data
    ]
    for at in range(0, rows, 20_000):
        sink.apply(changes[at : at + 20_000])
    sink.close()


class Server:
    def __init__(self, bench: Bench, schema: str, cache_size: int) -> None:
        import uvicorn

        from cdcwh.config import Settings
        from cdcwh.serve.app import build_app

        settings = Settings.model_validate(
            {
                "data_dir": bench.root / f"api-{cache_size}",
                "postgres": {"schema": schema, "audit_schema": f"{schema}_audit"},
                "serve": {"jwt_secret": SECRET, "rate_limit": "1000000/second", "cache_size": cache_size},
            }
        )
        app = build_app(settings, reader_dsn=bench.pg_dsn, audit_dsn=bench.pg_dsn)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def load(
    url: str, token: str, clients: int, requests: int, *, page: bool = False
) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    body = {"query": PAGE} if page else {"query": QUERY, "variables": {"q": SEMANTIC}}
    headers = {"Authorization": f"Bearer {token}"}

    async def client(count: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for _ in range(count):
                start = time.perf_counter()
                response = await http.post("/graphql", json=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or "errors" in response.json():
                    raise RuntimeError(f"API answered {response.status_code}: {response.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(client(requests // clients) for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - start), latencies


def plain_select(
    bench: Bench, schema: str, clients: int, requests: int, *, page: bool = False
) -> tuple[float, list[float]]:
    import psycopg

    from cdcwh.serve.compile import DimensionRef, Principal, SemanticQuery, compile_query
    from cdcwh.serve.model import load_model
    from cdcwh.serve.rows import compile_rows

    model = load_model(ROOT / "schemas" / "semantic")
    analyst = Principal("bench", ("analyst",))
    query = SemanticQuery(
        measures=tuple(SEMANTIC["measures"]),  # type: ignore[arg-type]
        dimensions=(DimensionRef("orders.status"), DimensionRef("orders.order_date", "month")),
    )
    compiled = (
        compile_rows(
            model,
            "orders",
            analyst,
            schema=schema,
            columns=PAGE_COLUMNS,
            first=100,
            after=None,
            max_rows=10_000,
            types={},
            order=("order_id",),
        )
        if page
        else compile_query(model, query, analyst, schema=schema, max_rows=10_000)
    )
    latencies: list[float] = []

    def client(count: int) -> None:
        with psycopg.connect(bench.pg_dsn, autocommit=True) as conn:
            for _ in range(count):
                start = time.perf_counter()
                conn.execute(compiled.query, compiled.params).fetchall()
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [requests // clients] * clients))
    return len(latencies) / (time.perf_counter() - start), latencies


def bench_api(bench: Bench) -> None:
    from cdcwh.serve.auth import issue

    args = bench.args
    schema = "bench_api"
    fill(bench, schema, args.api_rows)
    token = issue(SECRET, subject="bench", roles=["analyst"], claims={}, ttl_s=3600)
    figures: dict[str, list[float]] = {
        k: []
        for k in (
            *("cached", "uncached", "plain", "cached_p99", "uncached_p99", "plain_p99"),
            *("page", "page_plain", "page_p99", "page_plain_p99"),
        )
    }
    for i in range(args.runs):
        for name, cache_size in (("cached", 1024), ("uncached", 0)):
            with Server(bench, schema, cache_size) as url:
                rate, latencies = asyncio.run(load(url, token, args.api_clients, args.api_requests))
                figures[name].append(rate)
                figures[f"{name}_p99"].append(p99(latencies) * 1000)
                if not cache_size:  # the typed page, each request running its SQL
                    rate, latencies = asyncio.run(
                        load(url, token, args.api_clients, args.api_requests, page=True)
                    )
                    figures["page"].append(rate)
                    figures["page_p99"].append(p99(latencies) * 1000)
        for name, page in (("plain", False), ("page_plain", True)):
            rate, latencies = plain_select(bench, schema, args.api_clients, args.api_requests, page=page)
            figures[name].append(rate)
            figures[f"{name}_p99"].append(p99(latencies) * 1000)
        log.print(
            f"  run {i + 1}: cached {figures['cached'][-1]:,.0f} req/s, "
            f"uncached {figures['uncached'][-1]:,.0f} req/s, "
            f"plain SELECT {figures['plain'][-1]:,.0f} q/s; typed page {figures['page'][-1]:,.0f} req/s, "
            f"its plain SELECT {figures['page_plain'][-1]:,.0f} q/s ({args.api_clients} clients)"
        )
    bench.results["api"] = {
        "rows": args.api_rows,
        "clients": args.api_clients,
        "requests": args.api_requests,
        **{f"{k}_per_s" if not k.endswith("p99") else f"{k}_ms": summary(v) for k, v in figures.items()},
        "ratio_cached": summary([c / p for c, p in zip(figures["cached"], figures["plain"], strict=True)]),
        "ratio_uncached": summary(
            [u / p for u, p in zip(figures["uncached"], figures["plain"], strict=True)]
        ),
        "ratio_page": summary([u / p for u, p in zip(figures["page"], figures["page_plain"], strict=True)]),
    }
