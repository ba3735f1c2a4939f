"""The API's access audit table, ``<postgres.audit_schema>.api_access``: its DDL lives here, with the other
audit tables' (``schema.py``), so ``cdcwh postgres init-roles`` creates it owned by the owner role and
``cdcwh serve`` needs no owner DSN (it imports ``ensure_table`` from here)."""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

TABLE: Final = "api_access"

API_ACCESS_DDL: Final = """
CREATE TABLE IF NOT EXISTS {schema}.api_access (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    subject text,
    roles text[] NOT NULL,
    operation text NOT NULL,
    operation_hash text,
    marts text[] NOT NULL,
    rows_returned integer NOT NULL,
    duration_ms double precision NOT NULL,
    status text NOT NULL,
    error text
);
"""

EXISTS_SQL: Final = "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL"


async def ensure_table(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Create the schema and the table when missing; when the table exists (``init-roles`` made it) nothing
    is run, so a role that may only insert (the audit DSN) gets here too."""
    cur = await conn.execute(EXISTS_SQL, (schema, TABLE))
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    exists = await conn.execute("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (schema,))
    found = await exists.fetchone()
    if not (found and found[0]):
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    await conn.execute(sql.SQL(API_ACCESS_DDL).format(schema=sql.Identifier(schema)))
