"""``cdcwh serve``: the GraphQL API and the live page over the marts (docs/serving.md)."""

from __future__ import annotations

import argparse

from cdcwh.config import Settings
from cdcwh.metrics import serve_metrics


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve the semantic layer over GraphQL, and the live dashboard page",
        description="An ASGI server (uvicorn) with /graphql (queries, and graphql-ws subscriptions "
        "pushing new answers when a mart changes), the live page at /; /metrics on the metrics port + 5. "
        "Tokens: JWT bearers (cdcwh token).",
    )
    parser.add_argument("--host", help="listen address (default: serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: serve.port, 8400)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from cdcwh.embedded import postgres_dsn
    from cdcwh.serve.app import build_app
    from cdcwh.serve.auth import check_settings

    check_settings(settings.serve)  # before anything else: a server nobody can call is no server
    app = build_app(
        settings,
        reader_dsn=postgres_dsn(settings, "reader"),
        audit_dsn=postgres_dsn(settings, "audit"),
        # creates audit.api_access when missing (init-roles makes it: serve needs no owner DSN)
        owner_dsn=postgres_dsn(settings, "owner") if settings.postgres.has_dsn("owner") else None,
    )
    serve_metrics(settings, "serve")
    uvicorn.run(
        app,
        host=args.host or settings.serve.host,
        port=args.port if args.port is not None else settings.serve.port,
        log_config=None,
        proxy_headers=False,
    )
    return 0
