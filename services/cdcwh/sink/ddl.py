"""The mart tables in PostgreSQL, derived from the gold models: no hand-written DDL to keep in step.

At start, in the sink's DDL transaction, for every gold model (``cdcwh.models.derive_marts`` gives its
columns and DuckDB types):

- a missing ``<schema>.<mart>`` is created: the model's columns in SELECT order with their PostgreSQL types,
  ``NOT NULL`` on the key columns, then ``_version bigint NOT NULL`` and ``_updated_at timestamptz NOT NULL``,
  and the header's primary key;
- an existing one is checked: a column the model computes but the table lacks, or a primary key other than
  the header's, stops the sink with a ConfigError naming the mart and the column (the sink never guesses the
  values of a new column for the rows already there: add it by hand and backfill, or drop the table and let
  the sink create it, then backfill). A column narrower than the model's type is widened in place
  (``numeric(12,2)`` to ``numeric(38,2)``: same scale, no table rewrite); any other type difference is
  logged and left alone, as are extra columns and ``NOT NULL``s a table created by hand may have.

A model whose types cannot be derived (its inputs are not in the contracts) keeps an existing table as it is,
with a warning; without a table it is a ConfigError.

The sink's own tables (``_tombstones``, ``_dead_letters``) are created here too. Only what is missing is
created, so a role without DDL rights (``cdcwh_sink``) starts fine once the owner has created everything; when
something is missing and the role may not create it, the sink stops at start naming the role, the privilege
(CREATE on the database or the schema) and the setting of the DSN (``cdcwh.pgprivileges``).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from cdcwh.errors import ConfigError
from cdcwh.models import DerivedMarts, MartTable, widens
from cdcwh.pgprivileges import Need, require_privileges

log = logging.getLogger(__name__)

RUNNER_COLUMNS = (("_version", "bigint"), ("_updated_at", "timestamp with time zone"))
TOMBSTONES = "_tombstones"
DEAD_LETTERS = "_dead_letters"
# the sink's own tables: the newest delete per key, and the changes PostgreSQL refused
SINK_TABLES = {
    TOMBSTONES: "mart text NOT NULL, key text NOT NULL, _version bigint NOT NULL, PRIMARY KEY (mart, key)",
    DEAD_LETTERS: "mart text NOT NULL, key text NOT NULL, version bigint NOT NULL, op text NOT NULL, "
    "change text NOT NULL, reason text NOT NULL, sqlstate text, error text NOT NULL, "
    "first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now(), "
    "attempts integer NOT NULL DEFAULT 1, PRIMARY KEY (mart, key, version)",
}


def ensure_marts(
    conn: psycopg.Connection[Any], schema: str, derived: DerivedMarts, *, setting: str = "postgres.dsn"
) -> None:
    """Create the schema, the sink's tables and every missing mart table, check and widen the existing ones
    (in the caller's transaction). ``setting``: the DSN setting named when the role may not create them."""
    row = conn.execute("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (schema,)).fetchone()
    schema_exists = bool(row and row[0])
    existing = table_columns(conn, schema)
    missing = [name for name in [*derived.tables, *SINK_TABLES] if name not in existing]
    if not schema_exists:
        require_privileges(conn, [Need("database", "CREATE")], service="sink", setting=setting)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    elif missing:  # USAGE first: without it, CREATE alone would not let the role see the schema's tables
        needs = [Need("schema", "USAGE", schema), Need("schema", "CREATE", schema)]
        require_privileges(conn, needs, service="sink", setting=setting)
    for name, columns in SINK_TABLES.items():
        if name not in existing:
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                    sql.Identifier(schema, name), sql.SQL(columns)
                )
            )
    keys = primary_keys(conn, schema)
    for mart in sorted(derived.tables.keys() | derived.failures.keys()):
        table = derived.tables.get(mart)
        if table is None:
            reason = derived.failures[mart]
            if mart not in existing:
                raise ConfigError(f"cannot create the mart table {schema}.{mart}: {reason}")
            log.warning(
                "cannot derive the columns of mart %s (%s); %s.%s keeps its own", mart, reason, schema, mart
            )
        elif mart not in existing:
            conn.execute(create_table_sql(schema, table))
            log.info("created %s.%s from its gold model", schema, mart)
        else:
            check_table(schema, table, existing[mart], keys.get(mart, ()))
            widen_columns(conn, schema, table, existing[mart])


def create_table_sql(schema: str, table: MartTable) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` of a mart; a DuckDB type with no PostgreSQL mapping is a ConfigError."""
    columns: list[sql.Composable] = []
    for column in table.columns:
        kind = column.postgres_type
        if kind is None:
            raise ConfigError(
                f"mart {table.name}: column {column.name} is {column.duckdb_type} in its gold model, which "
                f"has no PostgreSQL type here; cast it in the model (docs/gold.md, Types)"
            )
        not_null = sql.SQL(" NOT NULL" if column.name in table.primary_key else "")
        columns.append(sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(kind), not_null))
    columns += [sql.SQL("{} {} NOT NULL").format(sql.Identifier(n), sql.SQL(k)) for n, k in RUNNER_COLUMNS]
    columns.append(
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, table.primary_key)))
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(schema, table.name), sql.SQL(", ").join(columns)
    )


def check_table(schema: str, table: MartTable, have: dict[str, str], key: tuple[str, ...]) -> None:
    """An existing mart table must have every column the model computes, and the header's primary key."""
    missing = [name for name in table.column_names if name not in have]
    if missing:
        raise ConfigError(
            f"mart table {schema}.{table.name} has no column {', '.join(missing)}, which its gold model "
            f"computes: add the column(s) and backfill (`cdcwh replay sink`), or drop the table for the "
            f"sink to create it"
        )
    if key != table.primary_key:
        raise ConfigError(
            f"mart table {schema}.{table.name} has the primary key ({', '.join(key)}) but its gold model "
            f"header says ({', '.join(table.primary_key)})"
        )


def widen_columns(conn: psycopg.Connection[Any], schema: str, table: MartTable, have: dict[str, str]) -> None:
    """Widen every column narrower than the model's type. Other differences are logged, not changed; a
    column that cannot be altered (a view depends on it) keeps its type, with a warning, and the values that
    do not fit become dead letters."""
    for column in table.columns:
        want, current = column.postgres_type, have[column.name]
        if want is None or want == current:
            continue
        if not widens(current, want):
            log.warning(
                "%s.%s.%s is %s in PostgreSQL but %s in gold; left as it is",
                schema,
                table.name,
                column.name,
                current,
                want,
            )
            continue
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                        sql.Identifier(schema, table.name), sql.Identifier(column.name), sql.SQL(want)
                    )
                )
            log.info("widened %s.%s.%s from %s to %s", schema, table.name, column.name, current, want)
        except psycopg.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise
            log.warning("cannot widen %s.%s.%s to %s: %s", schema, table.name, column.name, want, exc)


def table_columns(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, str]]:
    """Per table of ``schema``, its columns (in order) and their types as ``format_type`` spells them."""
    rows = conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum""",
        (schema,),
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        tables.setdefault(str(table), {})[str(column)] = str(kind)
    return tables


def primary_keys(conn: psycopg.Connection[Any], schema: str) -> dict[str, tuple[str, ...]]:
    """Per table of ``schema``, its primary key columns in key order."""
    rows = conn.execute(
        """SELECT c.relname, array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND i.indisprimary
        GROUP BY c.relname""",
        (schema,),
    ).fetchall()
    return {str(table): tuple(columns) for table, columns in rows}
