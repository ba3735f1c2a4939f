"""The access audit writer on real PostgreSQL: a batch PostgreSQL refuses is dropped and counted (it does not
wedge the writer), rows beyond the bound are dropped and counted, an existing table is used as it is."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from cdcwh.metrics import AUDIT_ROWS_DROPPED
from cdcwh.serve.audit import TABLE, Access, AuditWriter


def dropped() -> float:
    return AUDIT_ROWS_DROPPED.labels("serve", TABLE)._value.get()


def subjects(dsn: str, schema: str) -> list[str | None]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT subject FROM {} ORDER BY id").format(sql.Identifier(schema, TABLE))
        return [row[0] for row in conn.execute(query).fetchall()]


def test_a_refused_batch_is_dropped_and_later_rows_still_land(postgres_dsn: str, pg_schema: str) -> None:
    async def scenario() -> float:
        writer = AuditWriter(postgres_dsn, pg_schema)
        await writer.open()
        before = dropped()
        writer.record(Access("query", subject="nul\x00byte"))  # text cannot hold NUL: DataError
        await asyncio.wait_for(writer.flush(), timeout=20)
        writer.record(Access("query", subject="after"))
        await asyncio.wait_for(writer.flush(), timeout=20)
        await writer.close()
        return dropped() - before

    assert asyncio.run(scenario()) == 1
    assert subjects(postgres_dsn, pg_schema) == ["after"]


def test_rows_beyond_the_bound_are_dropped_and_counted(postgres_dsn: str, pg_schema: str) -> None:
    async def scenario() -> float:
        writer = AuditWriter(postgres_dsn, pg_schema, max_pending=2)
        before = dropped()
        for n in range(3):  # not open yet: nothing drains the queue
            writer.record(Access("query", subject=f"s{n}"))
        after_bound = dropped() - before
        await writer.open()
        await asyncio.wait_for(writer.flush(), timeout=20)
        await writer.close()
        return after_bound

    assert asyncio.run(scenario()) == 1
    assert subjects(postgres_dsn, pg_schema) == ["s0", "s1"]


def test_an_existing_table_needs_no_owner(postgres_dsn: str, pg_schema: str) -> None:
    """With the table already there, a bad owner DSN is never used."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
    from cdcwh.serve.audit import ensure_table

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await ensure_table(conn, pg_schema)
        writer = AuditWriter(postgres_dsn, pg_schema, "postgresql://nobody@127.0.0.1:1/none")
        await writer.open()
        writer.record(Access("query", subject="x"))
        await asyncio.wait_for(writer.flush(), timeout=20)
        await writer.close()

    asyncio.run(scenario())
    assert subjects(postgres_dsn, pg_schema) == ["x"]
