"""The PostgreSQL column types of the marts, derived from the gold models' DuckDB types.

``sql/postgres/marts.sql`` creates the mart tables (columns, NOT NULLs, primary keys). Their column types
must follow the gold models: when a model's cast changes (money sums went from ``DECIMAL(12,2)`` to
``DECIMAL(38,2)`` so that legal source data never overflows), the Postgres column must follow, on new and on
existing databases alike. So the sink does not trust hand-copied types: at start it computes every model's
output types in an in-memory DuckDB (each model run over empty ``silver`` / ``silver_history`` tables shaped
by the table contracts, models in dependency order, ``LIMIT 0``), maps them to PostgreSQL, and widens the
mart columns that are narrower (``migrate_types`` in ``postgres.py``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from cdcwh.contracts import load_contracts
from cdcwh.errors import ConfigError
from cdcwh.transform.gold import load_models  # noqa: TID251 (moves to cdcwh.models)
from cdcwh.warehouse import quote

log = logging.getLogger(__name__)

DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\((\d+),\s*(\d+)\)$", re.IGNORECASE)
NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
POSTGRES_TYPES = {
    "BOOLEAN": "boolean",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "REAL": "real",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "DATE": "date",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "TIME": "time without time zone",
    "BLOB": "bytea",
    "UUID": "uuid",
}
INTEGER_WIDTH = {"smallint": 2, "integer": 4, "bigint": 8}
# the silver metadata columns, as silver.py adds them (silver_history has the same)
SILVER_META = [
    ("__op", pa.string()),
    ("__source_ts", pa.timestamp("us", tz="UTC")),
    ("__lsn", pa.int64()),
    ("__seq", pa.int64()),
]


def postgres_type(duckdb_type: str) -> str | None:
    """The PostgreSQL type (as ``format_type`` spells it) of a DuckDB column type; None when unmapped."""
    match = DECIMAL.match(duckdb_type.strip())
    if match:
        return f"numeric({match[1]},{match[2]})"
    return POSTGRES_TYPES.get(duckdb_type.strip().upper())


def widens(current: str, wanted: str) -> bool:
    """Whether ``ALTER COLUMN ... TYPE wanted`` keeps every value of a ``current`` column: a numeric of the
    same scale and a larger precision (no table rewrite), or a wider integer."""
    have, want = NUMERIC.match(current), NUMERIC.match(wanted)
    if have and want:
        return have[2] == want[2] and int(want[1]) > int(have[1])
    if current in INTEGER_WIDTH and wanted in INTEGER_WIDTH:
        return INTEGER_WIDTH[wanted] > INTEGER_WIDTH[current]
    return False


def gold_duckdb_types(sql_dir: Path, contracts_dir: Path) -> dict[str, dict[str, str]]:
    """Per mart, its columns' DuckDB types as the gold model computes them, from the contracts' source types.
    A model whose inputs the contracts do not describe (or that fails on them) is left out, with a warning."""
    try:
        contracts = load_contracts(contracts_dir)
        models = load_models(sql_dir / "gold")
    except ConfigError as exc:
        log.warning("cannot derive the mart column types (%s); the mart tables keep theirs", exc)
        return {}
    con = duckdb.connect()
    try:
        for schema in ("silver", "silver_history", "gold"):
            con.execute(f"CREATE SCHEMA {schema}")
        for contract in contracts.values():
            name = contract.topic.rsplit(".", 1)[-1].lower()
            fields = [(column, spec.arrow_type) for column, spec in contract.columns.items()]
            empty = pa.schema(fields + SILVER_META).empty_table()
            con.register("empty_source", empty)
            for schema in ("silver", "silver_history"):
                con.execute(f"CREATE TABLE {schema}.{quote(name)} AS SELECT * FROM empty_source")
            con.unregister("empty_source")
        types: dict[str, dict[str, str]] = {}
        for model in models:
            try:
                con.execute(
                    f"CREATE TABLE gold.{quote(model.name)} AS SELECT * FROM ({model.sql}) AS m LIMIT 0"
                )
            except duckdb.Error as exc:
                log.warning("cannot derive the column types of mart %s: %s", model.name, exc)
                continue
            described = con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE gold.{quote(model.name)})"
            )
            types[model.name] = {str(column): str(kind) for column, kind in described.fetchall()}
        return types
    finally:
        con.close()


def mart_postgres_types(sql_dir: Path, contracts_dir: Path) -> dict[str, dict[str, str]]:
    """Per mart, the PostgreSQL type of each of its model's columns (unmapped DuckDB types left out)."""
    wanted: dict[str, dict[str, str]] = {}
    for mart, columns in gold_duckdb_types(sql_dir, contracts_dir).items():
        mapped = {column: postgres_type(kind) for column, kind in columns.items()}
        wanted[mart] = {column: kind for column, kind in mapped.items() if kind is not None}
    return wanted
