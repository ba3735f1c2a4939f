"""A gold mart and the relations its data quality tests read (in-memory DuckDB with the warehouse's
bookkeeping tables; ``refresh_gold`` called directly on hand-made silver tables): a mart already built whose
tested relation is missing is skipped (so marked behind, to catch up in full), not left waiting with the
changes of the batches it missed lost; and a target that reads a lagging silver table is not counted as
built, so its child waits instead of being built and published untested."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cdcwh.models import load_models
from cdcwh.models.catalog import GoldModel
from cdcwh.quality.gate import relations_tested
from cdcwh.quality.spec import parse_file
from cdcwh.transform.refresh import refresh_gold
from cdcwh.warehouse import ChangeSet, changes_table

ITEMS = """-- mart: items
-- primary key: id
-- incremental: id from silver.items.id
SELECT id, product_id FROM silver.items
"""
PRODS = """-- mart: prods
-- primary key: product_id
SELECT id AS product_id FROM silver.prods
"""
TESTS = """models:
  - name: items
    columns:
      - name: product_id
        tests:
          - relationships: {to: ref('prods'), field: product_id}
"""


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA silver; CREATE SCHEMA gold; CREATE SCHEMA cdcwh")
    con.execute("CREATE TABLE cdcwh.state (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL)")
    con.execute(
        'CREATE TABLE cdcwh.outbox (id BIGINT, version BIGINT, mart VARCHAR, key VARCHAR, op VARCHAR, "row" '
        "VARCHAR, source_ts TIMESTAMPTZ, created_at TIMESTAMPTZ)"
    )
    yield con
    con.close()


def models(tmp_path: Path) -> list[GoldModel]:
    (tmp_path / "items.sql").write_text(ITEMS)
    (tmp_path / "prods.sql").write_text(PRODS)
    return load_models(tmp_path)


def item_changes(con: duckdb.DuckDBPyConnection, rows: str) -> ChangeSet:
    """The batch's changed rows of silver.items (``rows``: a VALUES list of (id, product_id))."""
    con.execute(f"DROP TABLE IF EXISTS {changes_table('silver', 'items')}")
    con.execute(
        f"CREATE TEMP TABLE {changes_table('silver', 'items')} AS "
        f"SELECT * FROM (VALUES {rows}) AS t(id, product_id)"
    )
    return ChangeSet(captured={("silver", "items")})


def test_a_built_mart_whose_tested_relation_is_missing_is_skipped_then_catches_up(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    marts = models(tmp_path)
    con.execute("CREATE TABLE silver.items AS SELECT 1 AS id, 7 AS product_id")
    built, skipped = refresh_gold(con, marts, 1, None)  # no test yet: items is built, prods waits
    assert [m.name for m in built] == ["items"] and skipped == {}
    tested = relations_tested(parse_file(Path("items.yml"), TESTS, "gold"))
    con.execute("INSERT INTO silver.items VALUES (2, 7)")  # arrives while gold.prods does not exist
    built, skipped = refresh_gold(con, marts, 2, item_changes(con, "(2, 7)"), tested_against=tested)
    assert built == []
    assert skipped == {"items": "its data quality tests read gold.prods, not in the warehouse"}
    con.execute("CREATE TABLE silver.prods AS SELECT 7 AS id")
    # items is behind (the transform marks a skipped model so): it refreshes in full, item 2 included
    built, skipped = refresh_gold(
        con, marts, 3, item_changes(con, "(0, 0)"), tested_against=tested, behind={"items"}
    )
    assert {m.name for m in built} == {"items", "prods"} and skipped == {}
    assert con.execute("SELECT id FROM gold.items ORDER BY id").fetchall() == [(1,), (2,)]


def test_a_target_reading_a_lagging_table_is_not_counted_as_built(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    marts = models(tmp_path)
    con.execute("CREATE TABLE silver.items AS SELECT 1 AS id, 7 AS product_id")
    con.execute("CREATE TABLE silver.prods AS SELECT 7 AS id")
    tested = relations_tested(parse_file(Path("items.yml"), TESTS, "gold"))
    # silver.prods failed to apply this batch: prods is skipped, so gold.prods will not exist after it
    built, skipped = refresh_gold(con, marts, 1, None, tested_against=tested, lagging={"prods"})
    assert built == [], "items was built though its relationships test could not run"
    assert skipped == {"prods": "reads silver.prods, whose bronze rows failed to apply"}
    built, skipped = refresh_gold(con, marts, 2, None, tested_against=tested)
    assert {m.name for m in built} == {"items", "prods"}
