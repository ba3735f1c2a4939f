"""Each test kind compiled to DuckDB SQL, run on small tables in a real (in-memory) DuckDB: the failing row
counts and samples are worked out by hand from the rows below. Batch scope (the rows of one ``_version``)
gives the full-scope verdict on the touched rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from cdcwh.core.identifiers import quote
from cdcwh.models.expressions import key_json_sql
from cdcwh.quality.compile import failing_rows_sql
from cdcwh.quality.runner import run_test
from cdcwh.quality.spec import TestSpec, parse_file

MODELS = """
models:
  - name: facts
    columns:
      - name: id
        tests: [unique, not_null]
      - name: status
        tests:
          - accepted_values: {values: [open, done]}
      - name: dim_id
        tests:
          - relationships: {to: ref('dims'), field: dim_id}
      - name: code
        tests:
          - not_null: {config: {where: "status = 'done'", severity: warn}}
    tests:
      - expression_is_true: {expression: "qty > 0"}
      - row_count: {min: 1, max: 5}
      - unique_combination_of_columns: {combination_of_columns: [dim_id, code]}
  - name: scd
    tests:
      - mutually_exclusive_ranges:
          {lower_bound_column: valid_from, upper_bound_column: valid_to, partition_by: cid}
      - freshness: {column: _updated_at, max_age_s: 3600}
"""


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA gold")
    con.execute("CREATE TABLE gold.dims (dim_id INTEGER)")
    con.execute("INSERT INTO gold.dims VALUES (1), (2)")
    con.execute(
        "CREATE TABLE gold.facts (id INTEGER, status VARCHAR, dim_id INTEGER, code VARCHAR, qty INTEGER, "
        "_version BIGINT)"
    )
    # id 3 twice (one old, one touched); id NULL; status 'lost'; dim 9 missing; qty 0 and -2; (2, 'b') twice
    con.execute(
        """INSERT INTO gold.facts VALUES
        (1, 'open', 1, 'a', 5, 1), (2, 'done', 2, 'b', 1, 1), (3, 'done', 2, NULL, 1, 1),
        (3, 'lost', 9, 'c', 0, 2), (NULL, 'open', NULL, 'd', -2, 2), (6, 'done', 2, 'b', 4, 2)"""
    )
    con.execute(
        "CREATE TABLE gold.scd (cid INTEGER, valid_from INTEGER, valid_to INTEGER, _updated_at TIMESTAMPTZ)"
    )
    # customer 1: fine (closed 1-5, open from 5); customer 2: 1-5 overlaps 4-open; customer 3: two open rows
    con.execute(
        """INSERT INTO gold.scd VALUES (1, 1, 5, now()), (1, 5, NULL, now()), (2, 1, 5, now()),
        (2, 4, NULL, now()), (3, 1, NULL, now()), (3, 2, NULL, now() - INTERVAL 2 HOUR)"""
    )
    yield con
    con.close()


def specs() -> dict[str, TestSpec]:
    return {s.test_id: s for s in parse_file(Path("t.yml"), MODELS, "gold")}


EXPECTED_FULL = {
    "facts.unique.id": (1, [{"id": 3, "n_records": 2}]),
    "facts.not_null.id": (1, None),
    "facts.accepted_values.status": (1, None),
    "facts.relationships.dim_id": (1, None),
    "facts.not_null.code": (1, None),  # where status = 'done': only id 3's NULL code
    "facts.expression_is_true": (2, None),  # qty 0 and -2
    "facts.row_count": (1, [{"row_count": 6}]),  # 6 rows > max 5
    "facts.unique_combination_of_columns": (1, [{"dim_id": 2, "code": "b", "n_records": 2}]),
    "scd.mutually_exclusive_ranges": (2, None),  # customer 2's first range, customer 3's first open one
    "scd.freshness": (0, None),  # the newest change is a moment old
}


@pytest.mark.parametrize("test_id", sorted(EXPECTED_FULL))
def test_each_kind_counts_the_failing_rows_worked_out_by_hand(
    con: duckdb.DuckDBPyConnection, test_id: str
) -> None:
    result = run_test(con, specs()[test_id], run_id="r")
    assert result is not None
    failing, sample = EXPECTED_FULL[test_id]
    assert result.failing_rows == failing
    assert len(result.sample) == failing
    if sample is not None:
        assert result.sample == sample
    spec = specs()[test_id]
    expected_status = "pass" if failing == 0 else ("warn" if spec.severity == "warn" else "fail")
    assert result.status == expected_status and result.scope == "full"


def test_samples_carry_the_failing_rows(con: duckdb.DuckDBPyConnection) -> None:
    values = run_test(con, specs()["facts.accepted_values.status"], run_id="r")
    assert values is not None and values.sample == [
        {"id": 3, "status": "lost", "dim_id": 9, "code": "c", "qty": 0, "_version": 2}
    ]
    ranges = run_test(con, specs()["scd.mutually_exclusive_ranges"], run_id="r")
    assert ranges is not None
    assert [(r["cid"], r["valid_from"], r["valid_to"]) for r in ranges.sample] == [(2, 1, 5), (3, 1, None)]


def test_a_stale_model_fails_freshness(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("UPDATE gold.scd SET _updated_at = TIMESTAMPTZ '2020-01-01 00:00:00+00'")
    result = run_test(con, specs()["scd.freshness"], run_id="r")
    assert result is not None and result.failing_rows == 1 and result.status == "fail"
    assert result.sample[0]["age_s"] > 3600


@pytest.mark.parametrize("test_id", sorted(EXPECTED_FULL))
def test_batch_scope_gives_the_full_verdict_on_the_touched_rows(
    con: duckdb.DuckDBPyConnection, test_id: str
) -> None:
    """Batch scope on ``_version = 2`` finds exactly the failures that involve a touched row (by hand); for
    the row-level kinds that is the full verdict on a table of the touched rows alone."""
    spec = specs()[test_id]
    if spec.table == "scd":
        con.execute("ALTER TABLE gold.scd ADD COLUMN _version BIGINT DEFAULT 1")
        con.execute("UPDATE gold.scd SET _version = 2 WHERE cid = 3")
    batch = run_test(con, spec, run_id="b", scope="_version = 2")
    if spec.kind == "freshness":
        assert batch is None, "freshness does not run in batch scope"
        return
    full = run_test(con, spec, run_id="f")
    assert batch is not None and full is not None and batch.scope == "batch"
    if spec.kind in ("row_count",):
        assert batch.failing_rows == full.failing_rows
        return
    # the version-1 rows alone pass every row-level test, so every failure involves a touched row
    touched_only = {
        "facts.unique.id": 1,  # id 3: the touched copy duplicates an old row
        "facts.not_null.id": 1,
        "facts.accepted_values.status": 1,
        "facts.relationships.dim_id": 1,
        "facts.not_null.code": 0,  # the NULL code is on an old row: not this batch's
        "facts.expression_is_true": 2,
        "facts.unique_combination_of_columns": 1,  # (2, 'b'): touched id 6 duplicates old id 2
        "scd.mutually_exclusive_ranges": 1,  # only customer 3's partition is touched
    }
    assert batch.failing_rows == touched_only[test_id]
    if spec.kind in ("not_null", "accepted_values", "expression_is_true", "relationships"):
        con.execute("CREATE TABLE gold.touched AS SELECT * FROM gold.facts WHERE _version = 2")
        alone = run_test(con, replace(spec, table="touched"), run_id="t")
        assert alone is not None
        assert (alone.failing_rows, alone.sample) == (batch.failing_rows, batch.sample)


@pytest.mark.parametrize(
    ("test", "problem"),
    [
        ("- expression_is_true: {expression: 'qtty > 0'}", "gold.facts has no column qtty"),
        ("- row_count: {min: 1, config: {where: 'stauts = 1'}}", "gold.facts has no column stauts"),
        (
            "- unique_combination_of_columns: {combination_of_columns: [id, nope]}",
            "gold.facts has no column nope",
        ),
    ],
)
def test_a_misspelt_column_fails_the_test_saying_why_and_the_transaction_goes_on(
    con: duckdb.DuckDBPyConnection, test: str, problem: str
) -> None:
    text = f"models:\n  - name: facts\n    tests:\n      {test}\n"
    [spec] = parse_file(Path("t.yml"), text, "gold")
    con.begin()
    result = run_test(con, spec, run_id="r", scope="_version = 2")
    assert result is not None and result.status == "fail" and result.sample == [{"error": problem}]
    assert con.execute("SELECT count(*) FROM gold.facts").fetchall() == [(6,)], "the transaction is usable"
    con.commit()


def test_a_relationship_to_a_missing_column_fails(con: duckdb.DuckDBPyConnection) -> None:
    text = "models:\n  - name: facts\n    columns:\n      - name: dim_id\n        tests:\n"
    text += "          - relationships: {to: ref('dims'), field: id}\n"
    [spec] = parse_file(Path("t.yml"), text, "gold")
    result = run_test(con, spec, run_id="r")
    assert result is not None and result.sample == [{"error": "gold.dims has no column id"}]


def test_a_relationship_to_a_relation_not_built_yet_waits(con: duckdb.DuckDBPyConnection) -> None:
    text = "models:\n  - name: facts\n    columns:\n      - name: dim_id\n        tests:\n"
    text += "          - relationships: {to: ref('later'), field: dim_id}\n"
    [spec] = parse_file(Path("t.yml"), text, "gold")
    # in a full run no result, neither failed nor passed: the mart's first rows are tested once gold.later
    # exists; in a batch (the transform waits for it, so its target failed to build) it fails, holding
    assert run_test(con, spec, run_id="r") is None
    held = run_test(con, spec, run_id="b", scope="_version = 2")
    assert held is not None and held.status == "fail"
    assert held.sample == [{"error": "cannot run: gold.later not in the warehouse"}]
    # a warn test holds nothing, so its mart is built without waiting: it just does not run yet
    assert run_test(con, replace(spec, severity="warn"), run_id="b", scope="_version = 2") is None
    con.execute("CREATE TABLE gold.later AS SELECT 1 AS dim_id")
    result = run_test(con, spec, run_id="r")
    # the dims of facts are 1, 2, 2, 9, NULL and 2: the three 2s and the 9 are not in gold.later
    assert result is not None and (result.status, result.failing_rows) == ("fail", 4)


def test_ranges_in_batch_scope_include_a_touched_null_partition(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE gold.scd ADD COLUMN _version BIGINT DEFAULT 1")
    # customer NULL: 1-5 overlaps 3-open, and the 3-open row is touched
    con.execute("INSERT INTO gold.scd VALUES (NULL, 1, 5, now(), 1), (NULL, 3, NULL, now(), 2)")
    result = run_test(con, specs()["scd.mutually_exclusive_ranges"], run_id="b", scope="_version = 2")
    assert result is not None
    assert [(r["cid"], r["valid_from"]) for r in result.sample] == [(None, 1)]


def test_gaps_not_allowed_fails_a_range_that_stops_before_the_next(con: duckdb.DuckDBPyConnection) -> None:
    text = "models:\n  - name: scd\n    tests:\n      - mutually_exclusive_ranges:\n"
    text += "          {lower_bound_column: valid_from, upper_bound_column: valid_to, partition_by: cid,"
    text += " gaps: not_allowed}\n"
    [spec] = parse_file(Path("g.yml"), text, "gold")
    con.execute("INSERT INTO gold.scd VALUES (4, 1, 2, now()), (4, 3, NULL, now())")  # a gap from 2 to 3
    result = run_test(con, spec, run_id="r")
    assert result is not None
    # customer 2's overlap and customer 3's two open rows as before, plus customer 4's gap; not customer 1
    assert sorted((r["cid"], r["valid_from"]) for r in result.sample) == [(2, 1), (3, 1), (4, 1)]


def test_a_self_relationship_keeps_the_model_columns_checked(con: duckdb.DuckDBPyConnection) -> None:
    text = "models:\n  - name: facts\n    columns:\n      - name: dim_idd\n        tests:\n"
    text += "          - relationships: {to: ref('facts'), field: id}\n"
    [spec] = parse_file(Path("s.yml"), text, "gold")
    con.begin()
    result = run_test(con, spec, run_id="r", scope="_version = 2")
    assert result is not None and result.sample == [{"error": "gold.facts has no column dim_idd"}]
    con.commit()


@pytest.fixture
def outbox(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The batch of version 3 deleted dim 2 (and an older batch dim 9); no fact row has version 3."""
    con.execute("CREATE SCHEMA cdcwh")
    con.execute("CREATE TABLE cdcwh.outbox (version BIGINT, mart VARCHAR, key VARCHAR, op VARCHAR)")
    con.execute(
        """INSERT INTO cdcwh.outbox VALUES (3, 'dims', '{"dim_id":2}', 'delete'),
        (3, 'dims', '{"dim_id":1}', 'upsert'), (2, 'dims', '{"dim_id":9}', 'delete'),
        (3, 'other', '{"dim_id":1}', 'delete')"""
    )
    con.execute("DELETE FROM gold.dims WHERE dim_id = 2")
    return con


def test_a_relationship_checks_the_rows_whose_parent_the_batch_deleted(
    outbox: duckdb.DuckDBPyConnection,
) -> None:
    spec = specs()["facts.relationships.dim_id"]
    untouched = run_test(outbox, spec, run_id="b", scope="_version = 3")
    assert untouched is not None and untouched.failing_rows == 0, "the batch touched no fact row"
    result = run_test(outbox, spec, run_id="b", scope="_version = 3", changes="o.version = 3")
    # dim 2, deleted by version 3, under facts 2, 3 and 6 (none touched); fact 3's dim 9 went in another
    # batch, and dim 1's upsert and the other mart's delete of 1 orphan nothing
    assert result is not None and result.failing_rows == 3 and result.status == "fail"
    assert [(r["id"], r["dim_id"]) for r in result.sample] == [(2, 2), (3, 2), (6, 2)]
    full = run_test(outbox, spec, run_id="f")
    assert full is not None and full.failing_rows == 4  # and fact 3's dim 9


def test_a_relationship_on_a_field_outside_the_parent_key_checks_every_row_when_the_parent_changed(
    outbox: duckdb.DuckDBPyConnection,
) -> None:
    outbox.execute("UPDATE cdcwh.outbox SET key = '{\"sku\":\"x\"}' WHERE mart = 'dims' AND version = 3")
    spec = specs()["facts.relationships.dim_id"]
    result = run_test(outbox, spec, run_id="b", scope="_version = 3", changes="o.version = 3")
    assert result is not None and result.failing_rows == 4, "the parent changed: every row"
    quiet = run_test(outbox, spec, run_id="b", scope="_version = 3", changes="o.version = 4")
    assert quiet is not None and quiet.failing_rows == 0, "a batch that left the parent alone"


# (parent type, parent values, deleted, child type, child values, child rows orphaned): JSON writes a
# DECIMAL 1.50 as 1.5 and 5.00 as 5.0, a DOUBLE 1e20 as 100000000000000000000.0; the text of the child's
# value differs from each (1.50, 5.00, 1e+20, 5), yet the values are equal
TYPED_KEYS = {
    "decimal": ("DECIMAL(12,2)", [1.5, 5, 2.25], [1.5, 5], "DECIMAL(12,2)", [1.5, 5, 5, 2.25], 3),
    "double": ("DOUBLE", [1e20, 0.5], [1e20], "DOUBLE", [1e20, 0.5], 1),
    "bigint_under_decimal": ("DECIMAL(12,2)", [5, 7], [5], "BIGINT", [5, 7, 7], 1),
    "timestamptz": (
        "TIMESTAMPTZ",
        ["2026-01-01 10:00:00+00", "2026-01-02 10:00:00+00"],
        ["2026-01-01 10:00:00+00"],
        "TIMESTAMPTZ",
        ["2026-01-01 11:00:00+01", "2026-01-02 10:00:00+00"],  # the same instant as the deleted one
        1,
    ),
}


def deleted_parents(con: duckdb.DuckDBPyConnection, column: str, deleted: list[object]) -> None:
    """Batch 3 deletes ``deleted`` from gold.parents, written to the outbox as gold.py writes its keys."""
    con.execute("CREATE SCHEMA IF NOT EXISTS cdcwh")
    con.execute("CREATE TABLE cdcwh.outbox (version BIGINT, mart VARCHAR, key VARCHAR, op VARCHAR)")
    con.executemany(
        f"INSERT INTO cdcwh.outbox SELECT 3, 'parents', {key_json_sql((column,))}, 'delete' "
        f"FROM gold.parents WHERE {quote(column)} = ?",
        [[v] for v in deleted],
    )
    con.executemany(f"DELETE FROM gold.parents WHERE {quote(column)} = ?", [[v] for v in deleted])


def relationship(column: str) -> TestSpec:
    text = f"models:\n  - name: children\n    columns:\n      - name: '{column}'\n        tests:\n"
    text += f"          - relationships: {{to: ref('parents'), field: '{column}'}}\n"
    [spec] = parse_file(Path("c.yml"), text, "gold")
    return spec


@pytest.mark.parametrize("case", sorted(TYPED_KEYS))
def test_a_deleted_parent_key_is_matched_by_value_not_by_its_text(case: str) -> None:
    parent_type, parents, deleted, child_type, children, orphaned = TYPED_KEYS[case]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA gold")
    con.execute(f"CREATE TABLE gold.parents (k {parent_type})")
    con.executemany("INSERT INTO gold.parents VALUES (?)", [[v] for v in parents])
    con.execute(f"CREATE TABLE gold.children (id INTEGER, k {child_type}, _version BIGINT)")
    con.executemany("INSERT INTO gold.children VALUES (?, ?, 1)", list(enumerate(children)))
    deleted_parents(con, "k", deleted)
    result = run_test(con, relationship("k"), run_id="b", scope="_version = 3", changes="o.version = 3")
    assert result is not None and result.failing_rows == orphaned, result
    full = run_test(con, relationship("k"), run_id="f")
    assert full is not None and full.failing_rows == orphaned, "the batch finds what the full run finds"
    con.close()


def test_a_field_named_with_a_quote_and_a_slash_is_read_from_the_key() -> None:
    column = 'a"b/c'
    con = duckdb.connect()
    con.execute("CREATE SCHEMA gold")
    con.execute(f"CREATE TABLE gold.parents ({quote(column)} INTEGER)")
    con.execute("INSERT INTO gold.parents VALUES (1), (2)")
    con.execute(f"CREATE TABLE gold.children (id INTEGER, {quote(column)} INTEGER, _version BIGINT)")
    con.execute("INSERT INTO gold.children VALUES (1, 1, 1), (2, 2, 1), (3, 2, 1)")
    deleted_parents(con, column, [2])
    result = run_test(con, relationship(column), run_id="b", scope="_version = 3", changes="o.version = 3")
    assert result is not None and result.failing_rows == 2 and [r["id"] for r in result.sample] == [2, 3]
    con.close()


def test_a_relationship_with_its_key_type_unknown_checks_every_row_when_the_parent_changed() -> None:
    spec = relationship("k")
    sql = failing_rows_sql(spec, "_version = 3", "o.version = 3")
    assert sql is not None and "TRY_CAST" not in sql and "json_extract" not in sql
    typed = failing_rows_sql(spec, "_version = 3", "o.version = 3", "DECIMAL(12,2)")
    assert typed is not None and "AS DECIMAL(12,2))" in typed and "'/k'" in typed
