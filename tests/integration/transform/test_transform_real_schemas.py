"""Real Debezium 3.6.3 schemas through the transform: the same table name in two schemas, a topic regex that
narrows what the transform reads, one table's failure isolated from the others, and columns that stop
arriving (DROP COLUMN, RENAME COLUMN) detected and recorded.

The records of tests/fixtures/debezium/real_schemas.jsonl are landed by the real bronze writer into a real
Iceberg SqlCatalog under the test's data dir, then ``run_batch`` runs in-process against a real DuckDB file.
Offsets in the fixture (partition 0): 0-17 snapshot, accounts in both schemas, wide, late, scratch with its
truncate; 18-19 after ``DROP COLUMN note``; 20-21 after ``RENAME COLUMN score TO points``; 22-23 after
``ADD COLUMN tag``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY
from pyiceberg.catalog import Catalog

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RawRecord
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.models import GoldModel, load_models
from cdcwh.transform import batch as batch_module
from cdcwh.transform.batch import BatchResult, run_batch, silver_name
from cdcwh.warehouse import open_warehouse
from tests.support.debezium import captured

ALL_TOPICS = r"^zoo\.[^.]+\.[^.]+$"
DROP, RENAME, ADD = 18, 20, 22  # first offsets after each DDL statement

# gold models over the fixture's tables: regions reads sales.accounts, region_count reads gold.regions,
# late_names reads public.late only
MODELS = {
    "regions.sql": "-- mart: regions\n-- primary key: region\n"
    "SELECT region, count(*) AS accounts FROM silver.sales__accounts GROUP BY region",
    "region_count.sql": "-- mart: region_count\n-- primary key: n\nSELECT count(*) AS n FROM gold.regions",
    "late_names.sql": "-- mart: late_names\n-- primary key: id\nSELECT id, born FROM silver.late",
}


@dataclass
class Warehouse:
    settings: Settings
    catalog: Catalog
    bronze: IcebergBronzeWriter
    con: duckdb.DuckDBPyConnection
    models: list[GoldModel]
    records: list[RawRecord]

    def land(self, first: int = 0, last: int | None = None) -> None:
        """Land the fixture's records with offsets first..last (inclusive; all from first when None)."""
        chosen = [r for r in self.records if r.offset >= first and (last is None or r.offset <= last)]
        result = self.bronze.land(chosen)
        assert not result.quarantined

    def batch(self, **kwargs: Any) -> BatchResult:
        return run_batch(
            self.settings, self.con, self.catalog, self.models, max_offsets_per_partition=1000, **kwargs
        )

    def drain(self, **kwargs: Any) -> list[BatchResult]:
        results = []
        while (result := self.batch(**kwargs)).batch_id is not None:
            results.append(result)
            kwargs.pop("retry_behind", None)
        return results

    def rows(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def silver_tables(self) -> dict[str, str]:
        return {str(t): str(n) for n, t in self.rows("SELECT name, topic FROM cdcwh.silver_tables")}

    def tables(self, schema: str) -> set[str]:
        found = self.rows("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [schema])
        return {str(name) for (name,) in found}

    def watermark(self, topic: str) -> int | None:
        found = self.rows('SELECT max("offset") FROM cdcwh.watermarks WHERE topic = ?', [topic])
        return None if found[0][0] is None else int(found[0][0])

    def columns(self, table: str) -> dict[str, tuple[str, int]]:
        found = self.rows(
            "SELECT column_name, status, since_batch FROM cdcwh.silver_columns WHERE table_name = ?", [table]
        )
        return {str(c): (str(s), int(b)) for c, s, b in found}

    def comments(self, table: str) -> dict[str, str]:
        found = self.rows(
            "SELECT column_name, comment FROM duckdb_columns() "
            "WHERE schema_name = 'silver' AND table_name = ? AND comment IS NOT NULL",
            [table],
        )
        return {str(c): str(comment) for c, comment in found}


def make_warehouse(tmp_path: Path, topics: str = ALL_TOPICS) -> Warehouse:
    settings = Settings(data_dir=tmp_path / "data", kafka={"topics": topics})
    catalog = open_catalog(settings)
    bronze = IcebergBronzeWriter(catalog, settings.iceberg.namespace, {}, max_value_bytes=10_000_000)
    models_dir = tmp_path / "gold"
    models_dir.mkdir()
    for name, sql in MODELS.items():
        (models_dir / name).write_text(sql + "\n")
    return Warehouse(
        settings,
        catalog,
        bronze,
        open_warehouse(settings),
        load_models(models_dir),
        captured("real_schemas"),
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    made = make_warehouse(tmp_path)
    try:
        yield made
    finally:
        made.con.close()


def test_silver_names_qualify_other_schemas_and_keep_the_shop_names() -> None:
    assert silver_name("shop.public.orders") == "orders"
    assert silver_name("zoo.public.accounts") == "accounts"
    assert silver_name("zoo.sales.accounts") == "sales__accounts"
    assert silver_name("Zoo.Sales.Accounts") == "sales__accounts"


def test_the_same_table_name_in_two_schemas_gets_two_silver_tables(warehouse: Warehouse) -> None:
    warehouse.land()
    results = warehouse.drain()
    assert results and all(r.status == "ok" for r in results), [(r.failed_tables, r.failed) for r in results]
    assert warehouse.silver_tables() == {
        "zoo.public.accounts": "accounts",
        "zoo.sales.accounts": "sales__accounts",
        "zoo.public.evolving": "evolving",
        "zoo.public.late": "late",
        "zoo.public.scratch": "scratch",
        "zoo.public.wide": "wide",
    }
    # public.accounts: id 1 deleted, id 2 created; sales.accounts: ids 1 and 2, with their own columns
    assert warehouse.rows("SELECT id, name FROM silver.accounts ORDER BY id") == [(2, "public two")]
    assert warehouse.rows("SELECT id, region, balance::VARCHAR FROM silver.sales__accounts ORDER BY id") == [
        (1, "emea", "11.00"),
        (2, "apac", "20.25"),
    ]
    assert warehouse.rows("SELECT id, born FROM silver.late ORDER BY id") == [
        (1, "after streaming"),
        (2, "updated"),
    ]
    assert warehouse.rows("SELECT id, v FROM silver.scratch ORDER BY id") == [(4, "after truncate")]
    assert warehouse.rows("SELECT count(*) FROM silver.wide") == [(2,)]
    assert warehouse.rows("SELECT region, accounts FROM gold.regions ORDER BY region") == [
        ("apac", 1),
        ("emea", 1),
    ]


def test_a_name_registered_before_keeps_it_and_the_newcomer_is_qualified(warehouse: Warehouse) -> None:
    # a warehouse file that gave sales.accounts the plain name before names were qualified
    warehouse.con.execute("INSERT INTO cdcwh.silver_tables VALUES ('accounts', 'zoo.sales.accounts', ['id'])")
    warehouse.land()
    results = warehouse.drain()
    assert all(r.status != "failed" for r in results)
    names = warehouse.silver_tables()
    assert names["zoo.sales.accounts"] == "accounts"
    assert names["zoo.public.accounts"] == "public__accounts"
    assert warehouse.rows("SELECT id, region FROM silver.accounts ORDER BY id") == [(1, "emea"), (2, "apac")]
    assert warehouse.rows("SELECT id, name FROM silver.public__accounts") == [(2, "public two")]


def test_the_transform_reads_only_the_topics_matching_the_regex(tmp_path: Path) -> None:
    narrow = make_warehouse(tmp_path, r"^zoo\.public\.(accounts|late)$")
    try:
        narrow.land()
        assert narrow.drain()
        assert narrow.tables("silver") == {"accounts", "late"}
        assert set(narrow.silver_tables()) == {"zoo.public.accounts", "zoo.public.late"}
        assert {t for (t,) in narrow.rows("SELECT DISTINCT topic FROM cdcwh.watermarks")} == {
            "zoo.public.accounts",
            "zoo.public.late",
        }
        # widened, the others follow; the ones read already are not read again
        narrow.settings = Settings(data_dir=narrow.settings.data_dir, kafka={"topics": ALL_TOPICS})
        results = narrow.drain()
        assert "accounts" not in {name for r in results for name in r.silver}
        assert narrow.tables("silver") >= {
            "accounts",
            "sales__accounts",
            "late",
            "scratch",
            "wide",
            "evolving",
        }
    finally:
        narrow.con.close()


def failures(table: str) -> float:
    value = REGISTRY.get_sample_value("cdcwh_transform_table_failures_total", {"table": f"silver.{table}"})
    return value or 0.0


def test_a_table_whose_rows_fail_to_apply_does_not_block_the_others(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = batch_module.apply_changes
    broken = {"sales__accounts"}

    def apply_changes(
        con: duckdb.DuckDBPyConnection, name: str, rows: pa.Table, *args: Any, **kw: Any
    ) -> int:
        if name in broken:
            # after writing, as a real failure might: none of it may survive
            real_apply(con, name, rows, *args, **kw)
            raise ValueError(f"injected fault in {name}")
        return int(real_apply(con, name, rows, *args, **kw))

    monkeypatch.setattr(batch_module, "apply_changes", apply_changes)
    before = failures("sales__accounts")
    warehouse.land(0, DROP - 1)
    first = warehouse.batch()
    assert first.batch_id is not None
    assert first.status == "partial"
    assert set(first.failed_tables) == {"sales__accounts"}
    assert "injected fault" in first.failed_tables["sales__accounts"]
    assert {"accounts", "late", "scratch", "wide", "evolving"} <= set(first.silver)
    assert "sales__accounts" not in warehouse.tables("silver")
    assert warehouse.watermark("zoo.sales.accounts") is None
    assert warehouse.watermark("zoo.public.late") is not None
    # the models reading it (directly, or through gold.regions) are skipped and behind; the others refresh
    assert set(first.skipped) == {"regions", "region_count"}
    assert [m.name for m in first.gold] == ["late_names"]
    recorded = warehouse.rows(
        "SELECT status, error FROM cdcwh.batch_models WHERE batch_id = ? AND model = ?",
        [first.batch_id, "silver.sales__accounts"],
    )
    assert recorded and recorded[0][0] == "failed" and "injected fault" in recorded[0][1]
    assert warehouse.rows("SELECT status FROM cdcwh.batches WHERE batch_id = ?", [first.batch_id]) == [
        ("partial",)
    ]
    assert failures("sales__accounts") == before + 1
    # nothing else new: the failing table alone does not make a batch of its own
    assert warehouse.batch().batch_id is None
    # new rows elsewhere: the batch retries it, it fails again, the others advance
    warehouse.land(DROP, RENAME - 1)
    second = warehouse.batch()
    assert set(second.failed_tables) == {"sales__accounts"} and "evolving" in second.silver
    assert warehouse.watermark("zoo.sales.accounts") is None
    # the fault is gone: the next batch (a process's first retries without new rows) catches up
    broken.clear()
    third = warehouse.batch(retry_behind=True)
    assert third.status == "ok" and third.silver.get("sales__accounts") == 3
    assert warehouse.watermark("zoo.sales.accounts") == 8
    assert warehouse.rows("SELECT id, region FROM silver.sales__accounts ORDER BY id") == [
        (1, "emea"),
        (2, "apac"),
    ]
    assert warehouse.rows("SELECT region, accounts FROM gold.regions ORDER BY region") == [
        ("apac", 1),
        ("emea", 1),
    ]
    assert warehouse.rows("SELECT n FROM gold.region_count") == [(2,)]
    assert warehouse.rows("SELECT name FROM cdcwh.state WHERE name LIKE 'silver_failed:%'") == []
    assert warehouse.rows("SELECT name FROM cdcwh.state WHERE name LIKE 'gold_behind:%'") == []


def test_a_table_whose_bronze_read_fails_does_not_block_the_others(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = batch_module.read_new_rows

    def read_new_rows(table: Any, topic: str, *args: Any) -> Any:
        if topic == "zoo.public.wide":
            raise OSError("injected: a data file is unreadable")
        return real_read(table, topic, *args)

    monkeypatch.setattr(batch_module, "read_new_rows", read_new_rows)
    warehouse.land()
    first = warehouse.batch()
    assert set(first.failed_tables) == {"wide"} and "unreadable" in first.failed_tables["wide"]
    assert "sales__accounts" in first.silver and warehouse.watermark("zoo.public.wide") is None
    monkeypatch.setattr(batch_module, "read_new_rows", real_read)
    assert warehouse.batch(retry_behind=True).silver.get("wide") == 3
    assert warehouse.watermark("zoo.public.wide") is not None


def test_dropped_and_renamed_columns_are_detected_batch_by_batch(warehouse: Warehouse) -> None:
    warehouse.land(0, DROP - 1)
    warehouse.drain()
    assert warehouse.columns("evolving") == {}
    warehouse.land(DROP, RENAME - 1)  # after DROP COLUMN note: u id 1, c id 2
    (dropped,) = warehouse.drain()
    assert warehouse.columns("evolving") == {"note": ("not maintained", dropped.batch_id)}
    assert warehouse.comments("evolving") == {"note": f"not maintained since batch {dropped.batch_id}"}
    warehouse.land(RENAME, ADD - 1)  # after RENAME COLUMN score TO points: u id 1, c id 3
    (renamed,) = warehouse.drain()
    assert warehouse.columns("evolving") == {
        "note": ("not maintained", dropped.batch_id),
        "score": ("not maintained", renamed.batch_id),
    }
    (detail,) = warehouse.rows(
        "SELECT detail FROM cdcwh.silver_columns WHERE table_name = 'evolving' AND column_name = 'score'"
    )[0]
    assert "points" in detail  # the column that appeared with it
    warehouse.land(ADD)  # after ADD COLUMN tag: nothing more stops arriving
    warehouse.drain()
    assert set(warehouse.columns("evolving")) == {"note", "score"}
    # what silver holds: id 1 changed after both changes; id 2 (created between them) keeps its stale score
    assert warehouse.rows("SELECT id, note, score, points, tag FROM silver.evolving ORDER BY id") == [
        (1, None, None, 13, "new"),
        (2, None, 20, None, None),
        (3, None, None, 30, None),
        (4, None, None, 40, "x"),
    ]
    # no other table of the fixture has a column taken for dropped
    assert warehouse.rows("SELECT DISTINCT table_name FROM cdcwh.silver_columns") == [("evolving",)]


def test_dropped_and_renamed_columns_are_detected_within_one_batch(warehouse: Warehouse) -> None:
    warehouse.land()
    (only,) = warehouse.drain()
    assert warehouse.columns("evolving") == {
        "note": ("not maintained", only.batch_id),
        "score": ("not maintained", only.batch_id),
    }
    assert set(warehouse.comments("evolving")) == {"note", "score"}


def test_a_column_added_without_a_value_is_not_taken_for_dropped(warehouse: Warehouse) -> None:
    """ADD COLUMN without a default, then an update of an existing key: the new column arrives null where
    silver has no such column yet (a demo's `ALTER TABLE customers ADD COLUMN loyalty_tier` failed the
    column check with a binder error before)."""
    warehouse.land(0, ADD - 1)
    warehouse.drain()
    edited = []
    for record in warehouse.records:
        if record.offset < ADD or record.value is None:
            continue
        document = json.loads(record.value)
        if document["payload"].get("after") and "tag" in document["payload"]["after"]:
            document["payload"]["after"]["tag"] = None
        edited.append(record._replace(value=json.dumps(document).encode()))
    warehouse.records = [r for r in warehouse.records if r.offset < ADD] + edited
    warehouse.land(ADD)
    results = warehouse.drain()
    assert results and all(not r.failed_tables for r in results)
    assert warehouse.rows("SELECT count(*) FROM silver.evolving WHERE tag IS NOT NULL") == [(0,)]
    assert "tag" not in warehouse.columns("evolving")
    statuses = warehouse.rows(
        "SELECT DISTINCT status FROM cdcwh.batch_models WHERE model = 'silver.evolving'"
    )
    assert statuses == [("ok",)]
