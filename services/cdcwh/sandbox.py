"""The query sandbox: a locked, read-only DuckDB connection for SQL a user typed.

``cdcwh query`` (and the serving layer, for any SQL it did not write itself) runs user SQL here, never on a
connection of ``cdcwh.warehouse``. Two fences, each enough on its own for the cases the other misses:

1. **The connection** (``open_sandbox``): the warehouse file is attached read-only, then external access is
   switched off (no file, directory, URL or database other than the warehouse: ``read_csv``, ``read_text``,
   ``read_parquet``, ``glob``, ``COPY``, ``ATTACH``, ``EXPORT DATABASE``), extensions can be neither installed
   nor loaded (automatically or not), Python objects are not scanned by name, and then the configuration is
   locked, so no later ``SET``/``RESET`` can undo any of it.
2. **The statement** (``check_read_query``): DuckDB's own parser splits the text; exactly one statement of
   type SELECT is accepted. That covers ``SELECT``, ``WITH ... SELECT``, ``VALUES``, ``TABLE t``, ``FROM t``,
   ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` and ``UNPIVOT``; everything else (``PRAGMA``, ``CALL``, ``SET``,
   ``EXPLAIN``, ``PIVOT`` as a statement, ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``EXPORT``/``IMPORT``,
   DDL, DML, transactions, ``PREPARE``/``EXECUTE``, more than one statement) is refused before it runs.
"""

from __future__ import annotations

import duckdb

from cdcwh.config import Settings
from cdcwh.errors import CdcwhError, QueryRefused

#: applied in this order after the warehouse is attached; ``lock_configuration`` must come last
LOCKDOWN = (
    "SET enable_external_access = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET python_enable_replacements = false",
    "SET lock_configuration = true",
)

__all__ = ["QueryRefused", "check_read_query", "execute_read_query", "lock_down", "open_sandbox"]

ALLOWED = "one read query: SELECT, WITH, VALUES, TABLE, FROM, DESCRIBE, SHOW, SUMMARIZE or UNPIVOT"


def lock_down(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Switch off everything but reading the databases ``con`` has attached, and lock the configuration."""
    for statement in LOCKDOWN:
        con.execute(statement)
    return con


def open_sandbox(settings: Settings, *, wait_s: float = 30.0) -> duckdb.DuckDBPyConnection:
    """The warehouse, read-only, with external access off and the configuration locked (module docstring)."""
    from cdcwh.warehouse import open_warehouse

    con = open_warehouse(settings, read_only=True, wait_s=wait_s)
    try:
        return lock_down(con)
    except BaseException:
        con.close()
        raise


def check_read_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``QueryRefused`` unless ``sql`` is exactly one statement that DuckDB parses as a SELECT."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.ParserException as exc:
        raise CdcwhError(f"query failed: {exc}") from exc
    if not statements:
        raise QueryRefused(f"query refused: no statement found; expected {ALLOWED}")
    if len(statements) > 1:
        raise QueryRefused(
            f"query refused: {len(statements)} statements found; only {ALLOWED} is allowed, one per call"
        )
    try:
        kind = statements[0].type.name
    except ValueError:  # a statement type the Python client does not name (e.g. UPDATE EXTENSIONS)
        kind = "unnamed"
    if kind != duckdb.StatementType.SELECT.name:
        raise QueryRefused(f"query refused: a {kind} statement is not allowed; only {ALLOWED} is allowed")


def execute_read_query(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
) -> duckdb.DuckDBPyConnection:
    """Check ``sql`` (``check_read_query``) and run it on ``con``, which should come from ``open_sandbox``."""
    check_read_query(con, sql)
    try:
        return con.execute(sql, params or [])
    except duckdb.Error as exc:
        raise CdcwhError(f"query failed: {exc}") from exc
