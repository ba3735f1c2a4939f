"""Run data quality tests on the DuckDB warehouse and record their results (``cdcwh.dq_results``).

A test's failing rows come from ``compile.failing_rows_sql``; one query returns their count and a sample of
up to ``SAMPLE_ROWS`` of them (ordered, so that a rerun shows the same sample). A test whose model is not in
the warehouse yet is skipped (no result): a model waits for its inputs, it does not fail. So is a test that
reads another relation not built yet (a ``relationships`` target before its first row) in a full run, or on
silver. The transform builds no gold model before the relations of its error tests exist
(``transform/batch.py``), so in a gold batch this happens only when the target itself failed to build: the
test then fails (its model is held), the rows are not published untested.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import duckdb

from cdcwh import metrics
from cdcwh.quality.compile import columns_used, failing_rows_sql, foreign_relations
from cdcwh.quality.results import RESULTS_TABLE, Scope, Status, TestResult
from cdcwh.quality.spec import Relationships, TestSpec
from cdcwh.warehouse import insert_rows

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5
_WAITING_REPORTED: set[tuple[str, tuple[str, ...]]] = set()  # (test id, relations): logged once per process
GATE_BYPASS_TABLE = """
CREATE TABLE IF NOT EXISTS cdcwh.gate_bypass (
    model VARCHAR PRIMARY KEY, reason VARCHAR NOT NULL, requested_at TIMESTAMPTZ NOT NULL)
"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RESULTS_TABLE)
    con.execute(GATE_BYPASS_TABLE)


def _plain(value: Any) -> Any:
    """A sample value as JSON holds it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Catalog:
    """The warehouse's tables and every relation's columns with their types, read once per run of tests: a
    test run changes no table, and catalog queries per test cost more than many of the tests (milliseconds
    each)."""

    tables: frozenset[tuple[str, str]]
    columns: dict[tuple[str, str], frozenset[str]]
    types: dict[tuple[str, str, str], str]  # (schema, table, lower-case column) -> its DuckDB type

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> Catalog:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        columns: dict[tuple[str, str], set[str]] = {}
        types: dict[tuple[str, str, str], str] = {}
        for schema, table, column, data_type in con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns()"
        ).fetchall():
            relation, name = (str(schema), str(table)), str(column).lower()
            columns.setdefault(relation, set()).add(name)
            types[(*relation, name)] = str(data_type)
        return cls(
            frozenset((str(s), str(t)) for s, t in tables),
            {relation: frozenset(names) for relation, names in columns.items()},
            types,
        )


def waiting_for(catalog: Catalog, spec: TestSpec) -> list[str]:
    """The relations besides its own model the test reads that are not in the warehouse yet."""
    return sorted(
        f"{layer}.{table}" for layer, table in foreign_relations(spec) if (layer, table) not in catalog.tables
    )


def parent_key_type(catalog: Catalog, spec: TestSpec) -> str | None:
    """The DuckDB type of a ``relationships`` test's ``field`` in its target (None for another test, or when
    the target or the field is missing)."""
    if not isinstance(spec.args, Relationships):
        return None
    return catalog.types.get((spec.layer, spec.args.target, spec.args.field.lower()))


def run_test(
    con: duckdb.DuckDBPyConnection,
    spec: TestSpec,
    *,
    run_id: str,
    scope: str | None = None,
    batch_id: int | None = None,
    ran_at: datetime | None = None,
    changes: str | None = None,
    catalog: Catalog | None = None,
) -> TestResult | None:
    """One test, in full (``scope`` None) or on the touched rows (and for ``relationships`` the rows whose
    parent ``changes`` deleted: ``compile.py``); None when it does not run in that scope. ``catalog``: the
    warehouse's catalog as the run read it (read here when None)."""
    catalog = catalog or Catalog.read(con)
    sql = failing_rows_sql(spec, scope, changes, parent_key_type(catalog, spec) if changes else None)
    if sql is None:
        return None
    waiting = waiting_for(catalog, spec)
    if waiting and scope is not None and spec.layer == "gold" and spec.severity == "error":
        # the transform builds no mart before its tested relations exist: in a batch this is a target that
        # failed to build; the rows are not published untested
        absent = f"cannot run: {', '.join(waiting)} not in the warehouse"
        log.error("data quality test %s %s", spec.test_id, absent)
        return failed_result(spec, run_id, "batch", batch_id, ran_at, absent)
    if waiting:
        if (spec.test_id, tuple(waiting)) not in _WAITING_REPORTED:
            _WAITING_REPORTED.add((spec.test_id, tuple(waiting)))
            log.info(
                "data quality test %s waits for %s (not in the warehouse yet)",
                spec.test_id,
                ", ".join(waiting),
            )
        return None
    problem = missing_columns(catalog, spec)
    if problem:  # a misspelt name: the test fails, saying why, and the batch's transaction goes on
        log.error("data quality test %s cannot run: %s", spec.test_id, problem)
        return failed_result(spec, run_id, "full" if scope is None else "batch", batch_id, ran_at, problem)
    cursor = con.execute(
        f"SELECT count(*) OVER () AS __failing, * FROM ({sql}) AS f ORDER BY ALL LIMIT {SAMPLE_ROWS}"
    )
    names = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall()
    failing = int(rows[0][0]) if rows else 0
    sample = [{n: _plain(v) for n, v in zip(names[1:], row[1:], strict=True)} for row in rows]
    return _result(spec, run_id, scope, batch_id, ran_at, failing, sample, failed=failing > 0)


def failed_result(
    spec: TestSpec, run_id: str, scope: Scope, batch_id: int | None, ran_at: datetime | None, error: str
) -> TestResult:
    """The result of a test that could not run: failed (or warned), its sample the reason."""
    return _result(
        spec, run_id, None if scope == "full" else scope, batch_id, ran_at, 0, [{"error": error}], failed=True
    )


def _result(
    spec: TestSpec,
    run_id: str,
    scope: str | None,
    batch_id: int | None,
    ran_at: datetime | None,
    failing: int,
    sample: list[dict[str, Any]],
    *,
    failed: bool,
) -> TestResult:
    status: Status = "pass" if not failed else ("fail" if spec.severity == "error" else "warn")
    kind: Scope = "full" if scope is None else "batch"
    return TestResult(
        run_id=run_id,
        batch_id=batch_id,
        test_id=spec.test_id,
        model=spec.model,
        column_name=spec.column,
        test=spec.kind,
        severity=spec.severity,
        status=status,
        failing_rows=failing,
        sample=sample,
        scope=kind,
        ran_at=ran_at or datetime.now(UTC),
    )


def missing_columns(catalog: Catalog, spec: TestSpec) -> str | None:
    """What the test reads that the warehouse lacks (a table or a column), or None."""
    for (layer, table), columns in columns_used(spec).items():
        have = catalog.columns.get((layer, table), frozenset())
        if not have:
            return f"no table {layer}.{table}"
        missing = sorted(c for c in columns if c.lower() not in have)
        if missing:
            return f"{layer}.{table} has no column {', '.join(missing)}"
    return None


def run_tests(
    con: duckdb.DuckDBPyConnection, specs: Iterable[TestSpec], *, run_id: str | None = None
) -> list[TestResult]:
    """Every test in full (``cdcwh test``, the scheduled full run), skipping models not built yet."""
    run = run_id or str(uuid.uuid4())
    ran_at = datetime.now(UTC)
    catalog = Catalog.read(con)
    results = []
    for spec in specs:
        if (spec.layer, spec.table) not in catalog.tables:
            continue
        try:
            result = run_test(con, spec, run_id=run, ran_at=ran_at, catalog=catalog)
        except (duckdb.FatalException, duckdb.InternalException):
            raise
        except duckdb.Error as exc:  # not in a transaction here: the next test runs regardless
            result = failed_result(spec, run, "full", None, ran_at, f"{type(exc).__name__}: {exc}"[:1000])
        if result is not None:
            results.append(result)
    return results


def select(specs: Iterable[TestSpec], models: Iterable[str]) -> list[TestSpec]:
    """The tests of the named models (``orders``, ``silver.orders``); all when none is named."""
    wanted = set(models)
    return [s for s in specs if not wanted or s.model in wanted or s.test_id in wanted]


def record_results(con: duckdb.DuckDBPyConnection, results: Iterable[TestResult]) -> None:
    """Write results into ``cdcwh.dq_results`` (idempotent on ``(run_id, test_id)``; of a test given twice,
    the last result)."""
    latest = {(r.run_id, r.test_id): r for r in results}
    rows = [
        [
            r.run_id,
            r.batch_id,
            r.test_id,
            r.model,
            r.column_name,
            r.test,
            r.severity,
            r.status,
            r.failing_rows,
            json.dumps(r.sample),
            r.scope,
            r.ran_at,
        ]
        for r in latest.values()
    ]
    if rows:
        insert_rows(con, "INSERT OR REPLACE INTO cdcwh.dq_results", rows)


def observe(results: Iterable[TestResult]) -> None:
    for r in results:
        metrics.DQ_TESTS.labels(r.model, r.test_id, r.status).inc()
