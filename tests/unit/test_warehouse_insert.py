"""``insert_rows``: many rows per INSERT statement, with the values bound as executemany binds them."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from cdcwh.warehouse import ROWS_PER_INSERT, insert_rows


def test_every_row_lands_with_its_values_across_statements() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY, n BIGINT, note VARCHAR, ts TIMESTAMPTZ, x DOUBLE)")
    at = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    rows = [[f"k{i}", i, None if i % 2 else "it's", at, i / 4] for i in range(2 * ROWS_PER_INSERT + 3)]
    insert_rows(con, "INSERT INTO t", rows)
    con.execute("SET TimeZone = 'UTC'")
    got = con.execute("SELECT k, n, note, ts, x FROM t ORDER BY n").fetchall()
    assert [list(r) for r in got] == rows

    # INSERT OR REPLACE and a column list, as the bookkeeping tables use them
    insert_rows(con, "INSERT OR REPLACE INTO t (k, n)", [["k1", -1], ["new", 7]])
    assert con.execute("SELECT n, note FROM t WHERE k IN ('k1', 'new') ORDER BY k").fetchall() == [
        (-1, None),
        (7, None),
    ]


def test_a_bad_row_fails_the_statement() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY)")
    with pytest.raises(duckdb.ConstraintException):
        insert_rows(con, "INSERT INTO t", [["a"], ["a"]])
