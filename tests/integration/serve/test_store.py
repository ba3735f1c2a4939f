"""The API's warehouse side on real PostgreSQL: no cached answer is served while the mart announcements are
not listened to (they could have been missed), and announcements of marts outside the model are ignored."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdcwh import martnotify
from cdcwh.config import ServeSettings
from cdcwh.errors import ConfigError
from cdcwh.serve.audit import AuditWriter
from cdcwh.serve.compile import Compiled
from cdcwh.serve.model import load_model
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


def test_announcements_of_marts_outside_the_model_are_ignored(postgres_dsn: str, pg_schema: str) -> None:
    mart(postgres_dsn, pg_schema, 1)

    async def scenario() -> tuple[dict[str, int], list[frozenset[str] | None]]:
        warehouse = Warehouse(postgres_dsn, pg_schema, ServeSettings(), frozenset({"m"}))
        await warehouse.open()
        queue = warehouse.subscribe()
        try:
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # any role may notify
                for versions in ({"bogus": 7}, {"m": 3, "other": 9}):
                    conn.execute("SELECT pg_notify(%s, %s)", (warehouse.channel, martnotify.encode(versions)))
            woken = [await asyncio.wait_for(queue.get(), timeout=20)]
            while not queue.empty():
                woken.append(queue.get_nowait())
            return dict(warehouse.versions), woken
        finally:
            await warehouse.close()

    versions, woken = asyncio.run(scenario())
    assert versions == {"m": 3}
    assert woken == [frozenset({"m"})]


def test_start_fails_naming_the_setting(postgres_dsn: str, pg_schema: str) -> None:
    """A reader that cannot connect, or may not read a mart of the model, stops the start at once."""
    mart(postgres_dsn, pg_schema, 1)
    role = f"{pg_schema}_noread"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(*map(sql.Identifier, (pg_schema, role)))
        )
    unreachable = make_conninfo(postgres_dsn, host="127.0.0.1", port=1)
    try:
        for dsn, message in (
            (
                make_conninfo(postgres_dsn, user=role),
                rf"{role} \(postgres.reader_dsn\) lacks SELECT on table",
            ),
            (unreachable, "cannot connect to PostgreSQL with postgres.reader_dsn"),
        ):
            warehouse = Warehouse(dsn, pg_schema, ServeSettings(), frozenset({"m"}))
            with pytest.raises(ConfigError, match=message):
                asyncio.run(warehouse.open())
        writer = AuditWriter(unreachable, pg_schema)
        with pytest.raises(ConfigError, match="cannot connect to PostgreSQL with postgres.audit_dsn"):
            asyncio.run(writer.open())
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_model_column_missing_in_the_warehouse_is_named_with_file_and_line(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    mart(postgres_dsn, pg_schema, 1)
    lines = [
        "entities:",
        "  things:",
        "    mart: m",
        "    primary_key: [v]",
        "    dimensions:",
        "      colour: {column: colour}",  # line 6: no such column in the mart
        "    measures:",
        "      total: {agg: sum, column: v}",
        "roles:",
        "  all: {members: ['things.*']}",
    ]
    (tmp_path / "model.yml").write_text("\n".join(lines) + "\n")
    model = load_model(tmp_path)
    warehouse = Warehouse(postgres_dsn, pg_schema, ServeSettings(), frozenset({"m"}), model=model)
    with pytest.raises(
        ConfigError, match=rf"{tmp_path / 'model.yml'}:6: things.colour: mart m has no column colour"
    ):
        asyncio.run(warehouse.open())
    (tmp_path / "model.yml").write_text("\n".join(lines).replace("column: colour", "column: v") + "\n")
    good = Warehouse(postgres_dsn, pg_schema, ServeSettings(), frozenset({"m"}), model=load_model(tmp_path))
    good.preflight()  # no error


def test_a_failed_start_closes_what_it_opened(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    from cdcwh.serve.app import build_app
    from tests.integration.serve.shop import api_settings

    settings = api_settings(tmp_path, pg_schema)
    unreachable = make_conninfo(postgres_dsn, host="127.0.0.1", port=1)
    app = build_app(settings, reader_dsn=unreachable, audit_dsn=postgres_dsn)
    audit = app.state.services.audit

    async def start() -> None:
        async with app.router.lifespan_context(app):
            raise AssertionError("started with an unreachable reader")

    with pytest.raises(ConfigError, match="postgres.dsn"):
        asyncio.run(start())
    assert audit._task is None  # the audit writer opened first was closed again
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(settings.postgres.audit_schema)))
