"""The sink announces each committed batch on the marts schema's channel (``pg_notify`` inside its
transaction): the marts changed and their newest version, heard only once the rows are committed."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from cdcwh import martnotify
from cdcwh.config import PROJECT_ROOT
from cdcwh.sink.postgres import PostgresMartSink
from tests.integration.serve.shop import small_shop


def test_the_sink_announces_committed_versions(postgres_dsn: str, pg_schema: str) -> None:
    shop = small_shop()
    sink = PostgresMartSink(postgres_dsn, pg_schema, Path(PROJECT_ROOT / "sql"))
    with psycopg.connect(postgres_dsn, autocommit=True) as listener, psycopg.connect(postgres_dsn) as reader:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(martnotify.channel(pg_schema))))
        try:
            changes = shop.changes()
            sink.apply(changes)
            notices = list(listener.notifies(timeout=10, stop_after=1))
            # once heard, the rows are there for any other connection
            count = reader.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "orders"))
            ).fetchone()
            sink.apply([])  # an empty batch announces nothing
            assert list(listener.notifies(timeout=0.5)) == []
        finally:
            sink.close()
    assert len(notices) == 1 and notices[0].channel == martnotify.channel(pg_schema)
    expected = {}
    for change in changes:
        expected[change.mart] = max(change.version, expected.get(change.mart, 0))
    assert martnotify.decode(notices[0].payload) == expected
    assert count == (len(shop.orders),)
