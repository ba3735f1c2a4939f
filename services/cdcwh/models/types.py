"""A mart's columns and their types, derived from its gold model, and their PostgreSQL spelling.

The PostgreSQL mart tables follow the gold models, so nothing copies a column list or a type by hand: every
model is run with ``LIMIT 0`` in an in-memory DuckDB over empty ``silver`` / ``silver_history`` tables shaped
by the table contracts (models in dependency order, so ``gold.<mart>`` inputs exist), and ``DESCRIBE`` gives
its columns and DuckDB types. ``postgres_type`` maps those to PostgreSQL. The sink creates a missing mart
table from this and widens narrower columns of an existing one (``sink/ddl.py``); the tests read the same
columns (``tests/support/marts_reference.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from cdcwh.contracts import load_contracts
from cdcwh.errors import ConfigError
from cdcwh.models.catalog import GoldModel
from cdcwh.models.expressions import quote

DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\((\d+),\s*(\d+)\)$", re.IGNORECASE)
NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
POSTGRES_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric(38,0)",  # sum() of a BIGINT: cast counts to BIGINT in the model
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


@dataclass(frozen=True)
class MartColumn:
    name: str
    duckdb_type: str

    @property
    def postgres_type(self) -> str | None:
        return postgres_type(self.duckdb_type)


@dataclass(frozen=True)
class MartTable:
    """A mart as its model computes it: the columns in SELECT order with their types, and the header's key
    (without the ``_version`` / ``_updated_at`` the runner adds)."""

    name: str
    columns: tuple[MartColumn, ...]
    primary_key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True)
class DerivedMarts:
    """Per mart, its derived table, or why it could not be derived (a model whose inputs the contracts do
    not describe, that fails on them, or whose key is not among its columns)."""

    tables: dict[str, MartTable] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def derive_marts(models: list[GoldModel], contracts_dir: Path) -> DerivedMarts:
    """Run every model (in the dependency order ``load_models`` gives) over empty silver tables shaped by the
    contracts under ``contracts_dir`` and describe its result. Contracts that do not load fail every mart."""
    derived = DerivedMarts()
    try:
        contracts = load_contracts(contracts_dir)
    except ConfigError as exc:
        derived.failures.update({model.name: str(exc) for model in models})
        return derived
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
                con.execute(
                    f"CREATE TABLE IF NOT EXISTS {schema}.{quote(name)} AS SELECT * FROM empty_source"
                )
            con.unregister("empty_source")
        for model in models:
            try:
                con.execute(
                    f"CREATE TABLE gold.{quote(model.name)} AS SELECT * FROM ({model.sql}) AS m LIMIT 0"
                )
            except duckdb.Error as exc:
                derived.failures[model.name] = f"{model.path} does not run on the contracts' tables: {exc}"
                continue
            described = con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE gold.{quote(model.name)})"
            ).fetchall()
            columns = tuple(MartColumn(str(name), str(kind)) for name, kind in described)
            missing = [k for k in model.primary_key if k not in {c.name for c in columns}]
            if missing:
                derived.failures[model.name] = f"{model.path}: key column(s) {missing} are not in the SELECT"
                continue
            derived.tables[model.name] = MartTable(model.name, columns, model.primary_key)
        return derived
    finally:
        con.close()
