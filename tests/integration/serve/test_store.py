"""The API's warehouse side on real PostgreSQL: no cached answer is served while the mart announcements are
not listened to (they could have been missed), and announcements of marts outside the model are ignored."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
from psycopg import sql

from cdcwh.config import ServeSettings
from cdcwh.serve.compile import Compiled
from cdcwh.serve.store import Warehouse


def mart(dsn: str, schema: str, value: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (v int)").format(sql.Identifier(schema, "m")))
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "m")))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(schema, "m")), (value,))


def compiled(schema: str) -> Compiled:
    query = sql.SQL("SELECT v FROM {}").format(sql.Identifier(schema, "m"))
    return Compiled(sql.Composed([query]), (), ("v",), frozenset({"m"}), 10, True)


def test_no_cached_answer_while_not_listening(postgres_dsn: str, pg_schema: str) -> None:
    mart(postgres_dsn, pg_schema, 1)

    async def scenario() -> list[tuple[object, bool]]:
        warehouse = Warehouse(postgres_dsn, pg_schema, ServeSettings())
        await warehouse.open()
        try:
            seen = []
            for _ in range(2):
                answer = await warehouse.run(compiled(pg_schema))
                seen.append((answer.rows, answer.cached))
            assert warehouse._listener is not None
            warehouse._listener.cancel()  # the listener is down: announcements would be missed
            with contextlib.suppress(asyncio.CancelledError):
                await warehouse._listener
            await asyncio.to_thread(mart, postgres_dsn, pg_schema, 2)  # changed, announced to nobody
            answer = await warehouse.run(compiled(pg_schema))
            seen.append((answer.rows, answer.cached))
            return seen
        finally:
            await warehouse.close()

    assert asyncio.run(scenario()) == [(((1,),), False), (((1,),), True), (((2,),), False)]
