"""Start-up preflight of PostgreSQL privileges: a service whose role lacks a right it needs stops at start
with a ConfigError naming the role, the privilege, the object and the setting of the DSN, instead of failing
on its first batch (or, worse, half-way through one).

The checks are PostgreSQL's own (``has_database_privilege``, ``has_schema_privilege``, ``has_table_privilege``
for the connected role, memberships included), so what passes here is what the statements will be allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from cdcwh.config import PostgresPurpose, Settings
from cdcwh.errors import ConfigError

ObjectKind = Literal["database", "schema", "table"]


@dataclass(frozen=True)
class Need:
    """``privilege`` (``INSERT``, ``USAGE``, ...) on the database, a schema or a table (``schema.name``)."""

    kind: ObjectKind
    privilege: str
    schema: str = ""
    name: str = ""

    def describe(self) -> str:
        if self.kind == "database":
            return f"{self.privilege} on the database"
        if self.kind == "schema":
            return f"{self.privilege} on schema {self.schema}"
        return f"{self.privilege} on table {self.schema}.{self.name}"


def dsn_setting(settings: Settings, purpose: PostgresPurpose) -> str:
    """The setting the DSN for ``purpose`` comes from (``PostgresSettings.dsn_setting``, the one place)."""
    return settings.postgres.dsn_setting(purpose)


def table_needs(schema: str, tables: Iterable[str], privileges: Iterable[str]) -> list[Need]:
    """USAGE on ``schema`` and each of ``privileges`` on each of ``tables``."""
    wanted = tuple(privileges)
    return [Need("schema", "USAGE", schema)] + [
        Need("table", privilege, schema, table) for table in tables for privilege in wanted
    ]


def current_role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


MISSING_SQL = """
SELECT n.i FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
    WITH ORDINALITY AS n(kind, privilege, nsp, rel, i)
WHERE NOT coalesce(CASE n.kind
    WHEN 'database' THEN has_database_privilege(current_database(), n.privilege)
    WHEN 'schema' THEN has_schema_privilege((SELECT oid FROM pg_namespace WHERE nspname = n.nsp), n.privilege)
    ELSE has_table_privilege(to_regclass(format('%%I.%%I', n.nsp, n.rel))::oid, n.privilege)
END, false)
ORDER BY n.i"""
"""Every need in one round trip; a missing schema or table gives NULL (strict functions): not met."""


def missing_privileges(conn: psycopg.Connection[Any], needs: Iterable[Need]) -> list[Need]:
    """The needs the connected role does not meet (a missing schema or table counts as missing)."""
    wanted = list(needs)
    if not wanted:
        return []
    columns = ([n.kind for n in wanted], [n.privilege for n in wanted], [n.schema for n in wanted],
               [n.name for n in wanted])  # fmt: skip
    rows = conn.execute(MISSING_SQL, columns).fetchall()
    return [wanted[int(i) - 1] for (i,) in rows]


def require_privileges(
    conn: psycopg.Connection[Any], needs: Iterable[Need], *, service: str, setting: str
) -> None:
    """Raise a ConfigError naming every need the connected role misses (checked in the caller's transaction:
    it is left as it was, nothing is written)."""
    missing = missing_privileges(conn, needs)
    if missing:
        role = current_role(conn)
        lacks = "; ".join(need.describe() for need in missing)
        raise ConfigError(
            f"{service}: the PostgreSQL role {role} ({setting}) lacks {lacks}; connect as a role that has "
            f"it (`cdcwh postgres init-roles` creates them, docs/security.md) or grant it"
        )
