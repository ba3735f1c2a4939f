"""``record_results``: every result one row of ``cdcwh.dq_results``; a test given twice keeps its last result,
and a rerun of a run replaces its rows (as ``executemany`` of ``INSERT OR REPLACE`` did)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb

from cdcwh.quality.results import TestResult
from cdcwh.quality.runner import ensure_tables, record_results


def result(test_id: str, status: str, failing: int) -> TestResult:
    return TestResult(
        run_id="batch:7",
        batch_id=7,
        test_id=test_id,
        model="orders",
        column_name=None,
        test="not_null",
        severity="error",
        status=status,  # type: ignore[arg-type]
        failing_rows=failing,
        sample=[{"id": failing}] if failing else [],
        scope="batch",
        ran_at=datetime(2026, 7, 1, tzinfo=UTC),
    )


def rows(con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return con.execute(
        "SELECT test_id, status, failing_rows, sample FROM cdcwh.dq_results ORDER BY test_id"
    ).fetchall()


def test_the_last_result_of_a_test_is_kept_and_a_rerun_replaces_it() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdcwh")
    ensure_tables(con)
    record_results(con, [result("a", "fail", 3), result("b", "pass", 0), result("a", "pass", 0)])
    assert rows(con) == [("a", "pass", 0, "[]"), ("b", "pass", 0, "[]")]
    record_results(con, [result("b", "fail", 2)])
    assert rows(con) == [("a", "pass", 0, "[]"), ("b", "fail", 2, json.dumps([{"id": 2}]))]
