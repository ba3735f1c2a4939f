"""Column profiles computed in DuckDB, one query per table generated from its columns (quoted).

Per column: row count, null fraction, distinct estimate (``approx_count_distinct``), min and max (as text),
mean and standard deviation for numbers, and for text the most frequent values (``approx_top_k``) when
the column has at most ``TOP_VALUES_MAX_DISTINCT`` distinct values. Two kinds of window:

- a silver table: its changes since the last profile, the rows of ``silver_history.<table>`` whose ``__seq``
  is above the one the last profile reached (``cdcwh.state`` ``profile_seq:<table>``), so that a batch of
  nulls shows as a spike rather than a drop in the ocean of the table;
- a gold model: the whole table as it is.

Profiles are kept in ``cdcwh.column_profiles`` (``PROFILES_TABLE``) and shipped to ``audit.column_profiles``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb

from cdcwh.warehouse import insert_rows, quote, read_state, table_exists, write_state

TOP_VALUES: Final = 5
TOP_VALUES_MAX_DISTINCT: Final = 20
PROFILE_SEQ: Final = "profile_seq:"
PROFILES_TABLE: Final = """
CREATE TABLE IF NOT EXISTS cdcwh.column_profiles (
    layer VARCHAR NOT NULL, table_name VARCHAR NOT NULL, column_name VARCHAR NOT NULL,
    profiled_at TIMESTAMPTZ NOT NULL, batch_id BIGINT, row_count BIGINT NOT NULL, null_fraction DOUBLE,
    distinct_estimate BIGINT, min_value VARCHAR, max_value VARCHAR, mean DOUBLE, stddev DOUBLE,
    top_values VARCHAR,
    shipped BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (layer, table_name, column_name, profiled_at))
"""
PROFILE_COLUMNS: Final = (
    "layer, table_name, column_name, profiled_at, batch_id, row_count, null_fraction, distinct_estimate, "
    "min_value, max_value, mean, stddev, top_values"
)
NUMERIC_TYPES: Final = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
    | {"UHUGEINT", "FLOAT", "DOUBLE"}
)
TEXT_TYPES: Final = frozenset({"VARCHAR"})
NO_ORDER_TYPES: Final = ("STRUCT", "MAP", "UNION", "BLOB")


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    layer: str
    table_name: str
    column_name: str
    profiled_at: datetime
    batch_id: int | None
    row_count: int
    null_fraction: float | None
    distinct_estimate: int | None
    min_value: str | None
    max_value: str | None
    mean: float | None
    stddev: float | None
    top_values: list[str] | None

    def row(self) -> tuple[Any, ...]:
        top = None if self.top_values is None else json.dumps(self.top_values)
        return (
            self.layer,
            self.table_name,
            self.column_name,
            self.profiled_at,
            self.batch_id,
            self.row_count,
            self.null_fraction,
            self.distinct_estimate,
            self.min_value,
            self.max_value,
            self.mean,
            self.stddev,
            top,
        )


def is_numeric(kind: str) -> bool:
    return kind in NUMERIC_TYPES or kind.startswith("DECIMAL")


def table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows if not str(name).startswith("__")]


def profile_query(source: str, columns: list[tuple[str, str]], where: str = "true") -> str:
    """One SELECT computing every column's statistics over ``source`` (a quoted relation)."""
    parts = ["count(*)"]
    for name, kind in columns:
        col = quote(name)
        ordered = not kind.startswith(NO_ORDER_TYPES) and not kind.endswith("]")
        parts.append(f"count({col})")
        parts.append(f"approx_count_distinct({col})" if ordered else "NULL")
        parts.append(f"min({col})::VARCHAR" if ordered else "NULL")
        parts.append(f"max({col})::VARCHAR" if ordered else "NULL")
        parts.append(f"avg({col})::DOUBLE" if is_numeric(kind) else "NULL")
        parts.append(f"stddev_pop({col})::DOUBLE" if is_numeric(kind) else "NULL")
        parts.append(f"approx_top_k({col}, {TOP_VALUES})" if kind in TEXT_TYPES else "NULL")
    return f"SELECT {', '.join(parts)} FROM {source} WHERE {where}"  # noqa: S608 - quoted


def profile_relation(
    con: duckdb.DuckDBPyConnection,
    layer: str,
    table: str,
    source: str,
    columns: list[tuple[str, str]],
    *,
    at: datetime,
    batch_id: int | None,
    where: str = "true",
) -> list[ColumnProfile]:
    """The profiles of ``columns`` of ``source``; none when the window holds no row."""
    values = con.execute(profile_query(source, columns, where)).fetchall()[0]
    total = int(values[0])
    if total == 0:
        return []
    profiles = []
    for i, (name, _kind) in enumerate(columns):
        non_null, distinct, low, high, mean, stddev, top = values[1 + 7 * i : 8 + 7 * i]
        distinct_n = None if distinct is None else int(distinct)
        keep_top = top is not None and distinct_n is not None and distinct_n <= TOP_VALUES_MAX_DISTINCT
        profiles.append(
            ColumnProfile(
                layer=layer,
                table_name=table,
                column_name=name,
                profiled_at=at,
                batch_id=batch_id,
                row_count=total,
                null_fraction=(total - int(non_null)) / total,
                distinct_estimate=distinct_n,
                min_value=low,
                max_value=high,
                mean=None if mean is None else float(mean),
                stddev=None if stddev is None else float(stddev),
                top_values=[str(v) for v in top if v is not None] if keep_top else None,
            )
        )
    return profiles


def profile_silver(
    con: duckdb.DuckDBPyConnection, table: str, *, at: datetime, batch_id: int | None
) -> list[ColumnProfile]:
    """The changes of ``silver.<table>`` since its last profile (from its history), marking how far."""
    if not table_exists(con, "silver_history", table):
        columns = table_columns(con, "silver", table)
        return profile_relation(
            con, "silver", table, f"silver.{quote(table)}", columns, at=at, batch_id=batch_id
        )
    last = read_state(con, PROFILE_SEQ + table) or 0
    history = f"silver_history.{quote(table)}"
    top = con.execute(f"SELECT max(__seq) FROM {history}").fetchall()[0][0]  # noqa: S608 - quoted
    if top is None or int(top) <= last:
        return []
    columns = table_columns(con, "silver_history", table)
    where = f"__seq > {int(last)} AND __seq <= {int(top)} AND __op <> 'd'"
    profiles = profile_relation(con, "silver", table, history, columns, at=at, batch_id=batch_id, where=where)
    write_state(con, PROFILE_SEQ + table, int(top))
    return profiles


def profile_all(
    con: duckdb.DuckDBPyConnection, *, at: datetime, batch_id: int | None, gold: bool = True
) -> list[ColumnProfile]:
    """Profile every silver table (its new changes) and, with ``gold``, every gold model (in full: the
    costly part, hence its own interval), store the profiles in ``cdcwh.column_profiles`` and return them; in
    one transaction."""
    con.execute(PROFILES_TABLE)
    layers = ["silver", "gold"] if gold else ["silver"]
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE list_contains(?, schema_name) "
        "ORDER BY 1, 2",
        [layers],
    ).fetchall()
    profiles: list[ColumnProfile] = []
    con.execute("BEGIN")
    try:
        for schema, table in tables:
            if schema == "silver":
                profiles += profile_silver(con, str(table), at=at, batch_id=batch_id)
            else:
                source = f"gold.{quote(str(table))}"
                columns = table_columns(con, "gold", str(table))
                profiles += profile_relation(
                    con, "gold", str(table), source, columns, at=at, batch_id=batch_id
                )
        if profiles:
            insert_rows(
                con,
                f"INSERT OR IGNORE INTO cdcwh.column_profiles ({PROFILE_COLUMNS})",
                [p.row() for p in profiles],
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return profiles
