"""Compare every captured source table with its silver table: counts, range digests, then rows.

For each table registered in ``cdcwh.silver_tables`` (the topic ``<prefix>.<schema>.<table>`` names the source
table, ``key_columns`` its primary key):

1. The source's keys are split into ``ranges`` ranges of about equal size (every n-th key in key order;
   text keys in byte order, ``COLLATE "C"``, which is DuckDB's order too). The first range is open below and
   the last open above, so a silver key outside the source's keys still falls into one.
2. Each side computes, in one scan, per range: the row count and the sum of a 60-bit md5 of each row's
   canonical text (``canonical.digest_expressions``). Only the data leaves the databases as ``ranges`` pairs
   of numbers per side.
3. Ranges whose (count, sum) differ are fetched from both sides and compared row by row in Python by
   primary key, with ``canonical.canonical``: a key only in the source (missing in silver), only in silver,
   or present in both with columns that differ. A table with a column type the engines cannot write as the
   same text is compared this way in every range.

The source is read in one REPEATABLE READ transaction, so all its queries see one snapshot; the warehouse
file is opened read-only, so the transform cannot change it meanwhile. Changes still in flight between the
source and silver (capture or transform lag) show as differences: reconcile a quiet source after the
pipeline caught up (docs/operations.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import psycopg
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

from cdcwh.config import Settings
from cdcwh.core.identifiers import quote
from cdcwh.reconcile.canonical import (
    COLUMNS_SQL,
    INFINITY,
    MINUS_INFINITY,
    SourceColumn,
    canonical,
    digest_expressions,
    kind_of,
    row_hash_duck,
    row_hash_pg,
)
from cdcwh.reconcile.dsn import source_dsn

log = logging.getLogger(__name__)

DEFAULT_RANGES = 16
DEFAULT_SHOWN = 50
ROW = "(row)"
PRESENT = "(row present)"
ABSENT = "(no row)"


@dataclass(frozen=True, slots=True)
class Difference:
    """One differing key: a column whose canonical values differ, or ``column == "(row)"`` when one side has
    no row for the key (``source``/``silver`` are then ``(row present)`` / ``(no row)``)."""

    key: dict[str, str | None]
    column: str
    source: str | None
    silver: str | None

    @property
    def key_text(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.key.items())


@dataclass
class TableReconciliation:
    silver_table: str
    source_table: str
    """``schema.table`` in the source."""
    keys: tuple[str, ...]
    source_rows: int = 0
    silver_rows: int = 0
    missing_in_silver: int = 0
    only_in_silver: int = 0
    changed: int = 0
    differences: list[Difference] = field(default_factory=list)
    """The first ``max_shown`` differences (a changed key has one per differing column)."""
    ranges: int = 0
    ranges_compared: int = 0
    """Ranges whose digests differed (or all, for ``method == "rows"``), compared row by row."""
    method: str = "digest"
    skipped: str | None = None
    """Why the table was not compared (no primary key); a skipped table does not make the result differ."""
    notes: list[str] = field(default_factory=list)

    @property
    def differing_keys(self) -> int:
        return self.missing_in_silver + self.only_in_silver + self.changed

    @property
    def equal(self) -> bool:
        return self.differing_keys == 0

    def summary(self) -> str:
        """One line: ``orders: 1,204 rows, equal``."""
        if self.skipped:
            return f"{self.silver_table}: not compared ({self.skipped})"
        if self.equal:
            return f"{self.silver_table}: {self.source_rows:,} rows, equal"
        parts = [
            f"{count:,} {what}"
            for count, what in (
                (self.missing_in_silver, "missing in silver"),
                (self.only_in_silver, "only in silver"),
                (self.changed, "changed"),
            )
            if count
        ]
        noun = "key differs" if self.differing_keys == 1 else "keys differ"
        return (
            f"{self.silver_table}: {self.source_rows:,} rows in the source, {self.silver_rows:,} in silver, "
            f"{self.differing_keys:,} {noun} ({', '.join(parts)})"
        )


@dataclass
class ReconcileResult:
    tables: list[TableReconciliation] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(table.equal for table in self.tables)

    @property
    def differing_keys(self) -> int:
        return sum(table.differing_keys for table in self.tables)

    def table(self, name: str) -> TableReconciliation:
        return next(t for t in self.tables if t.silver_table == name)


# ---- reading PostgreSQL's infinity as the values cdcwh stores for it ---------------------------------------


class _Date(DateLoader):
    def load(self, data: Any) -> date:
        text = bytes(data)
        if text == b"infinity":
            return INFINITY.date()
        if text == b"-infinity":
            return MINUS_INFINITY.date()
        return super().load(data)


class _Timestamp(TimestampLoader):
    def load(self, data: Any) -> datetime:
        text = bytes(data)
        if text == b"infinity":
            return INFINITY
        if text == b"-infinity":
            return MINUS_INFINITY
        return super().load(data)


class _Timestamptz(TimestamptzLoader):
    def load(self, data: Any) -> datetime:
        text = bytes(data)
        if text == b"infinity":
            return INFINITY.replace(tzinfo=UTC)
        if text == b"-infinity":
            return MINUS_INFINITY.replace(tzinfo=UTC)
        return super().load(data)


def connect_source(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A read-only REPEATABLE READ connection to the source, UTC, ISO dates, infinity readable."""
    conn = psycopg.connect(dsn, connect_timeout=10)
    conn.adapters.register_loader("date", _Date)
    conn.adapters.register_loader("timestamp", _Timestamp)
    conn.adapters.register_loader("timestamptz", _Timestamptz)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    return conn


# ---- entry points ------------------------------------------------------------------------------------------


def reconcile(
    settings: Settings,
    *,
    source_dsn_override: str | None = None,
    tables: Sequence[str] | None = None,
    ranges: int = DEFAULT_RANGES,
    max_shown: int = DEFAULT_SHOWN,
) -> ReconcileResult:
    """Compare the source database (``source_dsn``) with the warehouse file of ``settings``."""
    from cdcwh.warehouse import open_warehouse

    dsn = source_dsn(settings, source_dsn_override)
    warehouse = open_warehouse(settings, read_only=True)
    try:
        with connect_source(dsn) as source:
            return reconcile_connections(source, warehouse, tables=tables, ranges=ranges, max_shown=max_shown)
    finally:
        warehouse.close()


def reconcile_connections(
    source: psycopg.Connection[tuple[Any, ...]],
    warehouse: duckdb.DuckDBPyConnection,
    *,
    tables: Sequence[str] | None = None,
    ranges: int = DEFAULT_RANGES,
    max_shown: int = DEFAULT_SHOWN,
) -> ReconcileResult:
    """The comparison on open connections (``source`` from ``connect_source``, ``warehouse`` read-only)."""
    if ranges < 1:
        raise ValueError("ranges must be >= 1")
    registered = warehouse.execute(
        "SELECT name, topic, key_columns FROM cdcwh.silver_tables ORDER BY name"
    ).fetchall()
    wanted = set(tables or ())
    result = ReconcileResult()
    found: set[str] = set()
    for name, topic, key_columns in registered:
        parts = str(topic).split(".")
        schema, table = (parts[-2], parts[-1]) if len(parts) >= 3 else ("public", parts[-1])
        aliases = {str(name), f"{schema}.{table}", table}
        if wanted and not aliases & wanted:
            continue
        found |= aliases & wanted
        pair = _TablePair(source, warehouse, str(name), schema, table, tuple(key_columns or ()))
        result.tables.append(pair.compare(ranges, max_shown))
    unknown = wanted - found
    if unknown:
        from cdcwh.errors import ConfigError

        raise ConfigError(
            f"not in cdcwh.silver_tables: {', '.join(sorted(unknown))} "
            "(name a silver table, schema.table or table of a captured topic)"
        )
    return result


# ---- one table ---------------------------------------------------------------------------------------------


Bounds = list[tuple[Any, ...]]


class _TablePair:
    def __init__(
        self,
        source: psycopg.Connection[tuple[Any, ...]],
        warehouse: duckdb.DuckDBPyConnection,
        silver: str,
        schema: str,
        table: str,
        keys: tuple[str, ...],
    ) -> None:
        self.pg = source
        self.duck = warehouse
        self.report = TableReconciliation(silver, f"{schema}.{table}", keys)
        self.keys = keys
        self.pg_table = f"{quote(schema)}.{quote(table)}"
        self.duck_table = f"silver.{quote(silver)}"
        self.source_columns = [
            SourceColumn(str(n), kind_of(str(t), str(tt), str(tc), e), str(t), int(m))
            for n, t, tt, tc, m, e in source.execute(COLUMNS_SQL, (self.pg_table,)).fetchall()
        ]
        self.silver_types = {
            str(n): str(t)
            for n, t in warehouse.execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = 'silver' AND table_name = ? ORDER BY column_index",
                [silver],
            ).fetchall()
            if not str(n).startswith("__")
        }

    # -- plan

    def compare(self, ranges: int, max_shown: int) -> TableReconciliation:
        report = self.report
        if not self.keys:
            report.skipped = "no primary key: silver keeps only its history"
            return report
        source_exists, silver_exists = bool(self.source_columns), bool(self.silver_types)
        if not source_exists:
            report.notes.append(f"{report.source_table} does not exist in the source")
            # compare the keys only: every silver row is one the source does not have
            self.source_columns = [SourceColumn(k, "other", self.silver_types.get(k, "?")) for k in self.keys]
        if not silver_exists:
            report.notes.append(f"silver.{report.silver_table} does not exist")
        names = {c.name for c in self.source_columns}
        missing_keys = [k for k in self.keys if k not in names]
        if missing_keys:
            report.skipped = f"key columns {missing_keys} not in {report.source_table}"
            return report
        lacking = [c.name for c in self.source_columns if c.name not in self.silver_types]
        if silver_exists and lacking:
            report.notes.append(f"silver lacks {', '.join(lacking)} (compared as NULL)")
        extra = [n for n in self.silver_types if n not in names]
        if source_exists and extra:
            report.notes.append(f"silver has {', '.join(extra)}, not in the source (ignored)")
        self.kinds = {c.name: c.kind for c in self.source_columns}
        self.source_exists, self.silver_exists = source_exists, silver_exists

        report.source_rows = self._pg_count() if source_exists else 0
        report.silver_rows = self._duck_count() if silver_exists else 0
        bounds = self._bounds(ranges) if source_exists else []
        report.ranges = len(bounds) + 1
        expressions = [digest_expressions(c, self.silver_types.get(c.name)) for c in self.source_columns]
        if all(e is not None for e in expressions) and source_exists and silver_exists:
            pg_exprs = [e[0] for e in expressions if e is not None]
            duck_exprs = [e[1] for e in expressions if e is not None]
            pg_digest = self._pg_digest(bounds, pg_exprs)
            duck_digest = self._duck_digest(bounds, duck_exprs)
            empty = (0, 0)
            todo = [i for i in range(len(bounds) + 1) if pg_digest.get(i, empty) != duck_digest.get(i, empty)]
        else:
            report.method = "rows"
            todo = list(range(len(bounds) + 1))
        shown: list[Difference] = []
        for index in todo:
            low = bounds[index - 1] if index > 0 else None
            high = bounds[index] if index < len(bounds) else None
            self._compare_range(low, high, shown, max_shown)
        report.ranges_compared = len(todo)
        report.differences = shown
        return report

    # -- counts, bounds and digests

    def _pg_count(self) -> int:
        row = self.pg.execute(f"SELECT count(*) FROM {self.pg_table}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def _duck_count(self) -> int:
        row = self.duck.execute(f"SELECT count(*) FROM {self.duck_table}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def _pg_key(self, column: str) -> str:
        """A key column as PostgreSQL orders it like DuckDB: text in byte order."""
        if self.kinds.get(column) in ("text", "bpchar"):
            return f'{quote(column)} COLLATE "C"'
        return quote(column)

    def _bounds(self, ranges: int) -> Bounds:
        """Every ceil(n / ranges)-th source key in key order: the lower bound of each range but the first."""
        total = self.report.source_rows
        if ranges <= 1 or total <= 1:
            return []
        step = max(1, math.ceil(total / ranges))
        keys = ", ".join(quote(k) for k in self.keys)
        order = ", ".join(self._pg_key(k) for k in self.keys)
        rows = self.pg.execute(
            f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {order}) AS rn "  # noqa: S608
            f"FROM {self.pg_table}) s WHERE rn > 1 AND mod(rn - 1, %s) = 0 ORDER BY rn",
            (step,),
        ).fetchall()
        return [tuple(row) for row in rows]

    def _less(self, bound: tuple[Any, ...], *, pg: bool) -> tuple[str, list[Any]]:
        """``key < bound`` in lexicographic order, with its parameters."""
        mark = "%s" if pg else "?"
        terms: list[str] = []
        params: list[Any] = []
        for i in range(len(self.keys)):
            parts: list[str] = []
            for j in range(i + 1):
                expression = self._pg_key(self.keys[j]) if pg else quote(self.keys[j])
                parts.append(f"{expression} {'<' if j == i else '='} {mark}")
                params.append(bound[j] if pg else _duck_param(bound[j]))
            terms.append("(" + " AND ".join(parts) + ")")
        return "(" + " OR ".join(terms) + ")", params

    def _bucket(self, bounds: Bounds, *, pg: bool) -> tuple[str, list[Any]]:
        if not bounds:
            return "0", []
        cases: list[str] = []
        params: list[Any] = []
        for index, bound in enumerate(bounds):
            condition, values = self._less(bound, pg=pg)
            cases.append(f"WHEN {condition} THEN {index}")
            params += values
        return f"CASE {' '.join(cases)} ELSE {len(bounds)} END", params

    def _pg_digest(self, bounds: Bounds, expressions: list[str]) -> dict[int, tuple[int, int]]:
        bucket, params = self._bucket(bounds, pg=True)
        rows = self.pg.execute(
            f"SELECT bucket, count(*), sum(h) FROM (SELECT {bucket} AS bucket, "  # noqa: S608
            f"{row_hash_pg(expressions)} AS h FROM {self.pg_table}) q GROUP BY bucket",
            params,
        ).fetchall()
        return {int(b): (int(n), int(s)) for b, n, s in rows}

    def _duck_digest(self, bounds: Bounds, expressions: list[str]) -> dict[int, tuple[int, int]]:
        bucket, params = self._bucket(bounds, pg=False)
        rows = self.duck.execute(
            f"SELECT bucket, count(*), sum(h) FROM (SELECT {bucket} AS bucket, "  # noqa: S608
            f"{row_hash_duck(expressions)} AS h FROM {self.duck_table}) q GROUP BY bucket",
            params,
        ).fetchall()
        return {int(b): (int(n), int(s)) for b, n, s in rows}

    # -- row by row

    def _range_sql(
        self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None, *, pg: bool
    ) -> tuple[str, list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        if low is not None:
            condition, values = self._less(low, pg=pg)
            conditions.append(f"NOT {condition}")
            params += values
        if high is not None:
            condition, values = self._less(high, pg=pg)
            conditions.append(condition)
            params += values
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return where, params

    def _fetch(
        self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None, *, pg: bool
    ) -> dict[tuple[str | None, ...], list[str | None]]:
        """The range's rows of one side: canonical key -> canonical values (source column order)."""
        if pg and not self.source_exists or not pg and not self.silver_exists:
            return {}
        where, params = self._range_sql(low, high, pg=pg)
        columns = [c.name for c in self.source_columns]
        if pg:
            select = ", ".join(quote(c) for c in columns)
            order = ", ".join(self._pg_key(k) for k in self.keys)
            cursor: Iterable[Sequence[Any]] = self.pg.execute(
                f"SELECT {select} FROM {self.pg_table}{where} ORDER BY {order}",  # noqa: S608
                params,
            ).fetchall()
        else:
            select = ", ".join(quote(c) if c in self.silver_types else f"NULL AS {quote(c)}" for c in columns)
            order = ", ".join(quote(k) for k in self.keys)
            cursor = self.duck.execute(
                f"SELECT {select} FROM {self.duck_table}{where} ORDER BY {order}",  # noqa: S608
                params,
            ).fetchall()
        positions = [columns.index(k) for k in self.keys]
        kinds = [self.kinds[c] for c in columns]
        rows: dict[tuple[str | None, ...], list[str | None]] = {}
        for raw in cursor:
            values = [canonical(value, kind) for value, kind in zip(raw, kinds, strict=True)]
            rows[tuple(values[p] for p in positions)] = values
        return rows

    def _compare_range(
        self,
        low: tuple[Any, ...] | None,
        high: tuple[Any, ...] | None,
        shown: list[Difference],
        max_shown: int,
    ) -> None:
        source = self._fetch(low, high, pg=True)
        silver = self._fetch(low, high, pg=False)
        report = self.report
        columns = [c.name for c in self.source_columns]

        def show(key: tuple[str | None, ...], column: str, left: str | None, right: str | None) -> None:
            if len(shown) < max_shown:
                shown.append(Difference(dict(zip(self.keys, key, strict=True)), column, left, right))

        for key in sorted(source.keys() | silver.keys(), key=_sort_key):
            mine, theirs = source.get(key), silver.get(key)
            if theirs is None:
                report.missing_in_silver += 1
                show(key, ROW, PRESENT, ABSENT)
            elif mine is None:
                report.only_in_silver += 1
                show(key, ROW, ABSENT, PRESENT)
            elif mine != theirs:
                report.changed += 1
                for column, left, right in zip(columns, mine, theirs, strict=True):
                    if left != right:
                        show(key, column, left, right)


def _duck_param(value: Any) -> Any:
    """A source key value as DuckDB compares it with silver's column (uuid is text in silver)."""
    import uuid

    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[int, int, str], ...]:
    """Numbers in numeric order, then text: only for a stable, readable listing."""
    out: list[tuple[int, int, str]] = []
    for value in key:
        if value is None:
            out.append((2, 0, ""))
        elif value.lstrip("-").isdigit():
            out.append((0, int(value), ""))
        else:
            out.append((1, 0, value))
    return tuple(out)
