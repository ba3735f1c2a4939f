"""A source database and a silver that stands in for the transform's, for the reconcile tests.

``fresh_database`` creates a database on the session's real PostgreSQL (``postgres_dsn``) and loads
``sql/source/shop.sql`` into it: the source. ``copy_to_silver`` builds silver tables in a real DuckDB
warehouse file by copying the source's rows with the types the transform gives them (docs/decoding.md:
integer -> INTEGER, bigint -> BIGINT, numeric(p,s) -> DECIMAL(p,s), timestamptz -> TIMESTAMPTZ in UTC,
timestamp -> TIMESTAMP, date -> DATE, text -> VARCHAR, ...), with silver's bookkeeping columns, registered in
``cdcwh.silver_tables`` under the topic ``shop.<schema>.<table>``. It stands in for the transform (which is
tested on its own in tests/integration/transform), so these tests exercise reconcile alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from cdcwh.config import Settings
from cdcwh.warehouse import open_warehouse, quote

SHOP_SQL = Path(__file__).resolve().parents[3] / "sql" / "source" / "shop.sql"
SHOP_TABLES = ("customers", "products", "orders", "order_items", "payments")
BOOKKEEPING = '"__op" VARCHAR, "__source_ts" TIMESTAMPTZ, "__lsn" BIGINT, "__seq" BIGINT'

# PostgreSQL type (format_type) -> the silver column type the transform produces for it
SILVER_TYPES = {
    "integer": "INTEGER",
    "smallint": "INTEGER",
    "bigint": "BIGINT",
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "numeric(10,2)": "DECIMAL(10,2)",
}


@contextmanager
def fresh_database(server_dsn: str, *, shop: bool = True) -> Iterator[str]:
    """A new database on the server of ``server_dsn`` (with the shop schema unless ``shop=False``)."""
    name = f"src_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    try:
        if shop:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SHOP_SQL.read_text())
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def copy_to_silver(
    dsn: str,
    settings: Settings,
    tables: Sequence[str] = SHOP_TABLES,
    *,
    types: dict[str, dict[str, str]] | None = None,
    keys: dict[str, list[str]] | None = None,
) -> None:
    """Silver tables holding exactly the source's rows (``types``: table -> column -> silver type, overriding
    ``SILVER_TYPES``; ``keys``: table -> key columns, default ``id``)."""
    con = open_warehouse(settings)
    try:
        with psycopg.connect(dsn) as pg:
            pg.execute("SET TIME ZONE 'UTC'")
            for table in tables:
                columns = pg.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (f"public.{table}",),
                ).fetchall()
                overrides = (types or {}).get(table, {})
                ddl = ", ".join(
                    f"{quote(name)} {overrides.get(name) or SILVER_TYPES[pg_type]}"
                    for name, pg_type in columns
                )
                con.execute(f"DROP TABLE IF EXISTS silver.{quote(table)}")
                con.execute(f"CREATE TABLE silver.{quote(table)} ({ddl}, {BOOKKEEPING})")
                names = [name for name, _ in columns]
                rows = pg.execute(
                    sql.SQL("SELECT {} FROM {}").format(
                        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier("public", table)
                    )
                ).fetchall()
                if rows:
                    marks = ", ".join("?" for _ in names)
                    con.executemany(
                        f"INSERT INTO silver.{quote(table)} ({', '.join(map(quote, names))}, __op, __seq) "
                        f"VALUES ({marks}, 'r', 1)",
                        [list(row) for row in rows],
                    )
                con.execute(
                    "INSERT OR REPLACE INTO cdcwh.silver_tables VALUES (?, ?, ?)",
                    [table, f"shop.public.{table}", (keys or {}).get(table, ["id"])],
                )
    finally:
        con.close()
