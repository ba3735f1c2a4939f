"""A test as DuckDB SQL selecting its failing rows, as dbt compiles its generic tests (pure).

A test passes when the query returns no row. ``scope`` narrows a test to the rows a batch touched (a SQL
condition on the model's rows, ``_version = <version>`` in gold, ``__seq > <seq>`` in silver):

- ``not_null``, ``accepted_values``, ``expression_is_true``, ``relationships``: the touched rows only (a row
  not touched passed before and did not change). A ``relationships`` test given the batch's gold changes
  (``changes``, a condition on ``cdcwh.outbox`` rows, alias ``o``: ``o.version = <version>``) also tests
  the rows whose value the batch deleted from the parent: the parent rows deleted, when ``field`` is a
  column of the parent's key (the outbox key holds it as JSON; the value read back as ``key_type``, the
  field's type in the parent, and compared as the full test compares it: a DECIMAL 1.50 is ``1.5`` in JSON);
  every row, when it is not, or when ``key_type`` is unknown, and the batch changed the parent at all (a
  changed value cannot be told from the outbox);
- ``unique`` and ``unique_combination_of_columns``: the values the touched rows hold, counted over the whole
  model (a duplicate may pair a touched row with an old one);
- ``mutually_exclusive_ranges``: the whole partitions the touched rows are in;
- ``row_count``: the whole model (one count);
- ``freshness`` does not run in batch scope (``None``): a batch is itself a change.

``where`` filters the model's rows first, for every kind, as in dbt.
"""

from __future__ import annotations

from typing import TypeVar

import sqlglot
from sqlglot import exp

from cdcwh.core.identifiers import quote
from cdcwh.quality.spec import (
    AcceptedValues,
    ExpressionIsTrue,
    Freshness,
    MutuallyExclusiveRanges,
    Relationships,
    RowCount,
    TestSpec,
    UniqueCombination,
)

T = TypeVar("T")
BATCH_KINDS = frozenset(
    {
        "unique",
        "not_null",
        "accepted_values",
        "relationships",
        "expression_is_true",
        "row_count",
        "unique_combination_of_columns",
        "mutually_exclusive_ranges",
    }
)


def relation(layer: str, table: str) -> str:
    return f"{layer}.{quote(table)}"


def literal(value: object) -> str:
    return exp.convert(value).sql(dialect="duckdb")


def _args(spec: TestSpec, kind: type[T]) -> T:
    if not isinstance(spec.args, kind):
        raise TypeError(f"{spec.test_id}: arguments of {spec.kind} are not {kind.__name__}")
    return spec.args


def foreign_relations(spec: TestSpec) -> set[tuple[str, str]]:
    """The (layer, table) the test reads besides its own model (a ``relationships`` target)."""
    return set(columns_used(spec)) - {(spec.layer, spec.table)}


def columns_used(spec: TestSpec) -> dict[tuple[str, str], set[str]]:
    """The columns the test reads, per (layer, table): checked against the warehouse before it runs, so that
    a misspelt name is reported as the test's failure rather than aborting the batch's transaction."""
    own: set[str] = {spec.column} if spec.column else set()
    used: dict[tuple[str, str], set[str]] = {(spec.layer, spec.table): own}
    args = spec.args
    if isinstance(args, Relationships):  # the target may be the model itself (a parent_id column)
        used.setdefault((spec.layer, args.target), set()).add(args.field)
    elif isinstance(args, UniqueCombination):
        own.update(args.combination_of_columns)
    elif isinstance(args, MutuallyExclusiveRanges):
        own.update(c for c in (args.lower_bound_column, args.upper_bound_column, args.partition_by) if c)
    elif isinstance(args, Freshness):
        own.add(args.column)
    for text in (spec.where, args.expression if isinstance(args, ExpressionIsTrue) else None):
        if text:
            parsed = sqlglot.parse_one(text, read="duckdb", into=exp.Condition)
            own.update(column.name for column in parsed.find_all(exp.Column))
    return used


def failing_rows_sql(
    spec: TestSpec, scope: str | None = None, changes: str | None = None, key_type: str | None = None
) -> str | None:
    """The query of the failing rows of ``spec`` (in full, or with ``scope`` on the touched rows, widened for
    ``relationships`` by the parent rows the ``changes`` deleted; ``key_type`` is the DuckDB type of the
    parent's ``field``), or None when the test does not run in that scope."""
    if scope is not None and spec.kind not in BATCH_KINDS:
        return None
    table = relation(spec.layer, spec.table)
    where = f"({spec.where})" if spec.where else "TRUE"
    base = f"(SELECT * FROM {table} WHERE {where})"
    touched = base if scope is None else f"(SELECT * FROM {table} WHERE {where} AND ({scope}))"
    col = quote(spec.column) if spec.column else ""
    args = spec.args
    if spec.kind == "not_null":
        return f"SELECT * FROM {touched} AS t WHERE t.{col} IS NULL"
    if spec.kind == "accepted_values":
        values = ", ".join(literal(v) for v in _args(spec, AcceptedValues).values)
        return f"SELECT * FROM {touched} AS t WHERE t.{col} IS NOT NULL AND t.{col} NOT IN ({values})"
    if spec.kind == "expression_is_true":
        return f"SELECT * FROM {touched} AS t WHERE NOT ({_args(spec, ExpressionIsTrue).expression})"
    if spec.kind == "relationships":
        rel = _args(spec, Relationships)
        parent = relation(spec.layer, rel.target)
        if scope is not None and changes is not None:
            orphaned = _orphaned(col, rel, changes, key_type)
            touched = f"(SELECT * FROM {table} AS c WHERE {where} AND (({scope}) OR {orphaned}))"
        return (
            f"SELECT t.* FROM {touched} AS t WHERE t.{col} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {parent} AS p WHERE p.{quote(rel.field)} = t.{col})"
        )
    if spec.kind in ("unique", "unique_combination_of_columns"):
        if isinstance(args, UniqueCombination):
            columns = [quote(c) for c in args.combination_of_columns]
            not_null = "TRUE"
        else:
            columns = [col]
            not_null = f"{col} IS NOT NULL"
        cols = ", ".join(columns)
        limit = "" if scope is None else f" AND ({cols}) IN (SELECT ({cols}) FROM {touched})"
        return (
            f"SELECT {cols}, count(*) AS n_records FROM {base} WHERE {not_null}{limit} "
            f"GROUP BY {cols} HAVING count(*) > 1"
        )
    if spec.kind == "row_count":
        counted = _args(spec, RowCount)
        bounds = []
        if counted.min is not None:
            bounds.append(f"row_count < {int(counted.min)}")
        if counted.max is not None:
            bounds.append(f"row_count > {int(counted.max)}")
        return f"SELECT row_count FROM (SELECT count(*) AS row_count FROM {base}) WHERE {' OR '.join(bounds)}"
    if spec.kind == "freshness":
        fresh = _args(spec, Freshness)
        return (
            f"SELECT newest, epoch(now()) - epoch(newest) AS age_s FROM "
            f"(SELECT max({quote(fresh.column)}) AS newest FROM {base}) "
            f"WHERE newest IS NULL OR epoch(now()) - epoch(newest) > {float(fresh.max_age_s)}"
        )
    if spec.kind == "mutually_exclusive_ranges":
        ranges = _args(spec, MutuallyExclusiveRanges)
        return _ranges_sql(ranges, base, touched if scope is not None else None)
    raise ValueError(f"unknown test kind {spec.kind!r}")


def json_pointer(name: str) -> str:
    """The JSON pointer (RFC 6901) of a top-level member: any name, a quote or a dot included."""
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _orphaned(col: str, rel: Relationships, changes: str, key_type: str | None) -> str:
    """A condition on a child row (alias ``c``): its value may have lost its parent in ``changes``."""
    path = literal(json_pointer(rel.field))
    parent_changes = f"cdcwh.outbox AS o WHERE ({changes}) AND o.mart = {literal(rel.target)}"
    if key_type is None:  # the value cannot be read back typed: every row, when the parent changed at all
        return f"EXISTS (SELECT 1 FROM {parent_changes})"
    value = f"TRY_CAST(json_extract_string(o.key, {path}) AS {key_type})"
    # a key without the field (or with a value no longer of its type): every row, as above
    unkeyed = f"EXISTS (SELECT 1 FROM {parent_changes} AND {value} IS NULL)"
    return f"(c.{col} IN (SELECT {value} FROM {parent_changes} AND o.op = 'delete') OR {unkeyed})"


def _ranges_sql(args: MutuallyExclusiveRanges, base: str, touched: str | None) -> str:
    """dbt_utils' mutually_exclusive_ranges (gaps allowed unless ``gaps: not_allowed``): per partition,
    ordered by the lower bound, a range ends no later than the next one starts; a NULL upper bound is open
    (so only the last may be)."""
    low, high = quote(args.lower_bound_column), quote(args.upper_bound_column)
    part = quote(args.partition_by) if args.partition_by else None
    over = f"PARTITION BY {part} " if part else ""
    rows = base
    if touched is not None and part is not None:  # a NULL partition is a partition too
        rows = (
            f"(SELECT * FROM {base} AS r WHERE EXISTS (SELECT 1 FROM {touched} AS s "
            f"WHERE s.{part} IS NOT DISTINCT FROM r.{part}))"
        )
    # with gaps not allowed, a range also ends exactly where the next one starts
    after = "<>" if args.gaps == "not_allowed" else ">"
    return (
        f"SELECT * FROM (SELECT *, lead({low}) OVER ({over}ORDER BY {low}, {high} NULLS LAST) "
        f"AS next_lower FROM {rows}) WHERE {low} IS NULL OR ({high} IS NOT NULL AND {low} > {high}) "
        f"OR (next_lower IS NOT NULL AND ({high} IS NULL OR {high} {after} next_lower))"
    )
