"""The API with the roles of ``cdcwh postgres init-roles``: the reader DSN answers queries, the audit DSN
writes ``api_access`` (created beforehand by the owner), and a write through the reader's pool is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from cdcwh.serve.audit import TABLE, ensure_table
from cdcwh.serve.store import Warehouse
from cdcwh.sink.postgres import PostgresMartSink
from tests.integration.postgres.conftest import Roles
from tests.integration.serve.shop import (
    RunningApi,
    api_settings,
    audit_rows,
    small_shop,
    token,
    wait_for,
    write,
)


def test_the_api_runs_on_the_reader_and_audit_roles(pg_roles: Roles, tmp_path: Path) -> None:
    from cdcwh.serve.app import build_app

    shop = small_shop()
    PostgresMartSink(pg_roles.dsn("owner"), pg_roles.marts, PROJECT_ROOT / "sql").connect().close()  # DDL
    write(pg_roles.dsn("sink"), pg_roles.marts, shop)

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(pg_roles.dsn("owner"), autocommit=True) as conn:
            await ensure_table(conn, pg_roles.audit)

    asyncio.run(create())
    with psycopg.connect(pg_roles.dsn("owner"), autocommit=True) as conn:  # what init-roles grants on audit
        conn.execute(
            sql.SQL("GRANT INSERT ON {} TO {}").format(
                sql.Identifier(pg_roles.audit, TABLE), sql.Identifier(pg_roles.name("audit"))
            )
        )
    settings = api_settings(tmp_path, pg_roles.marts)
    settings.postgres.audit_schema = pg_roles.audit
    app = build_app(settings, reader_dsn=pg_roles.dsn("reader"), audit_dsn=pg_roles.dsn("audit"))
    query = '{ semantic(query: {measures: ["orders.orders"]}) { rows } }'
    with RunningApi(app) as api:
        response = httpx.post(
            f"{api.url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {token('analyst', subject='reader-test')}"},
            timeout=30,
        )
        assert response.json() == {"data": {"semantic": {"rows": [[len(shop.orders)]]}}}

    async def write_through_the_reader() -> None:
        warehouse = Warehouse(pg_roles.dsn("reader"), pg_roles.marts, settings.serve)
        await warehouse.open()
        try:
            await warehouse.select(sql.SQL("DELETE FROM {}").format(sql.Identifier(pg_roles.marts, "orders")))
        finally:
            await warehouse.close()

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        asyncio.run(write_through_the_reader())
    rows = wait_for(lambda: audit_rows(pg_roles.admin_dsn, pg_roles.audit), what="the audit row")
    assert [(r["subject"], r["status"]) for r in rows] == [("reader-test", "ok")]
