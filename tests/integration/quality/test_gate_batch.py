"""The gate inside ``run_batch`` (real broker, ingest, Iceberg and DuckDB file; the batch called in-process):
a test whose query raises at run time does not fail the batch, it fails unrun and holds its model, and the
shipped tests pass on a generated workload; a rebuild is gated too."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import PROJECT_ROOT
from cdcwh.generate import ShopGenerator
from cdcwh.models import load_models
from cdcwh.quality.gate import request_bypass
from cdcwh.quality.runner import ensure_tables
from cdcwh.quality.spec import load_tests, parse_file
from cdcwh.replay.rebuild import rebuild
from cdcwh.transform.batch import GATE_HELD, BatchResult, GateHeld, gate_gold, run_batch
from cdcwh.transform.gold import ModelResult
from cdcwh.warehouse import open_warehouse, read_state
from tests.support.pipeline import run_ingest_until_caught_up, settings_for
from tests.support.warehouse import MARTS, produce_changes

# DuckDB cannot cast 'abc' to the price's DECIMAL: the query raises when it runs, not when the file is read
BROKEN = """
models:
  - name: dim_products
    tests:
      - expression_is_true: {expression: "price > 'abc'"}
"""


def test_a_test_that_raises_holds_its_model_and_the_batch_goes_on(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = f"dqb{uuid.uuid4().hex[:6]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    produce_changes(kafka_bootstrap, prefix, list(ShopGenerator(5).changes(400)))
    run_ingest_until_caught_up(settings)
    shipped = load_tests(settings.sql_path)
    # its own id (load_tests refuses a second file describing a model, so shipped ids never collide)
    broken = [replace(s, test_id="dim_products.broken") for s in parse_file(Path("b.yml"), BROKEN, "gold")]
    con = open_warehouse(settings)
    try:
        result = run_batch(
            settings,
            con,
            open_catalog(settings),
            load_models(settings.sql_path / "gold"),
            max_offsets_per_partition=100_000,
            tests=[*shipped, *broken],
        )
        # fact_order_items' relationships test reads gold.dim_products, which the hold keeps out of the
        # warehouse: it waits (not held, not failed), and daily_revenue, which reads it, waits with it
        assert set(result.held) == {"dim_products"}
        assert result.failed.keys() == {"dim_products"}
        assert result.skipped == {}
        assert {m.name for m in result.gold} == set(MARTS) - {
            "dim_products",
            "fact_order_items",
            "daily_revenue",
        }
        assert not [r for r in result.dq if r.model == "fact_order_items"], "a waiting mart is not tested"
        [failure] = result.held["dim_products"]
        assert failure.test_id == "dim_products.broken" and failure.status == "fail"
        assert "ConversionException" in failure.sample[0]["error"]
        # every other shipped test passed on the generated data, in batch scope, silver and gold
        assert [r.test_id for r in result.dq if r.status != "pass"] == []
        assert {r.model for r in result.dq} >= {"orders", "dim_customers", "silver.order_items"}
        rows = con.execute(
            "SELECT status, error FROM cdcwh.batch_models WHERE batch_id = ? AND model = 'dim_products'",
            [result.batch_id],
        ).fetchall()
        assert rows[0][0] == "held" and "dim_products.broken" in rows[0][1]
        recorded = con.execute(
            "SELECT status FROM cdcwh.dq_results WHERE test_id = 'dim_products.broken'"
        ).fetchall()
        assert recorded == [("fail",)]
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'dim_products'"
        ).fetchall() == [(0,)], "the held mart's first batch left nothing"
    finally:
        con.close()


def test_a_mart_waits_for_the_target_of_its_relationships_then_builds(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Order items whose products have not arrived yet (a slower topic): no gold.dim_products, so
    fact_order_items waits, without holding, failing or a partial batch; it builds, tested, with them."""
    prefix = f"dqw{uuid.uuid4().hex[:6]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    changes = list(ShopGenerator(7).changes(300))
    produce_changes(kafka_bootstrap, prefix, [c for c in changes if c.table != "products"])
    run_ingest_until_caught_up(settings)
    models = load_models(settings.sql_path / "gold")
    tests = load_tests(settings.sql_path)
    con = open_warehouse(settings)
    try:
        first = run_batch(
            settings, con, open_catalog(settings), models, max_offsets_per_partition=100_000, tests=tests
        )
        assert first.status == "ok" and first.held == {} and first.failed == {}
        built = {m.name for m in first.gold}
        assert {"dim_products", "fact_order_items", "daily_revenue"}.isdisjoint(built)
        assert "orders" in built
        produce_changes(kafka_bootstrap, prefix, [c for c in changes if c.table == "products"])
        run_ingest_until_caught_up(settings)
        second = run_batch(
            settings, con, open_catalog(settings), models, max_offsets_per_partition=100_000, tests=tests
        )
        assert second.status == "ok" and second.held == {}
        assert {"dim_products", "fact_order_items", "daily_revenue"} <= {m.name for m in second.gold}
        relationship = [r for r in second.dq if r.test_id == "fact_order_items.relationships.product_id"]
        assert [r.status for r in relationship] == ["pass"]
        items = con.execute("SELECT count(*) FROM gold.fact_order_items").fetchall()[0][0]
        assert items == con.execute("SELECT count(*) FROM silver.order_items").fetchall()[0][0] > 0
    finally:
        con.close()


def test_a_rebuild_does_not_publish_a_held_mart(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = f"dqr{uuid.uuid4().hex[:6]}"
    sql = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", sql)
    with (sql / "gold" / "dim_products.yml").open("a") as spec:  # every product fails it
        spec.write('      - expression_is_true: {expression: "price < 0"}\n')
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix, sql_dir=sql)
    produce_changes(kafka_bootstrap, prefix, list(ShopGenerator(6).changes(200)))
    run_ingest_until_caught_up(settings)
    con = open_warehouse(settings)
    try:
        first = run_batch(
            settings,
            con,
            open_catalog(settings),
            load_models(sql / "gold"),
            max_offsets_per_partition=100_000,
            tests=load_tests(sql),
        )
        assert "dim_products" in first.held
        assert read_state(con, GATE_HELD + "dim_products") == first.batch_id
    finally:
        con.close()
    rebuild(settings)
    con = open_warehouse(settings)
    try:
        # still held since the first batch: the rebuild's full gold batch was gated, not published
        assert read_state(con, GATE_HELD + "dim_products") == first.batch_id
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'dim_products'"
        ).fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM cdcwh.outbox WHERE mart = 'dim_products'").fetchall() == [
            (0,)
        ]
        last = con.execute(
            "SELECT status FROM cdcwh.batch_models WHERE model = 'dim_products' "
            "ORDER BY batch_id DESC LIMIT 1"
        ).fetchall()
        assert last == [("held",)]
    finally:
        con.close()


COUNTED = """
models:
  - name: marts_x
    tests:
      - row_count: {min: 2}
      - row_count: {min: 3, config: {severity: warn}}
"""


def _one_row_mart(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB file with a gold mart of one row (of version 1); the bare gate, without a pipeline."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA cdcwh; CREATE SCHEMA gold")
    con.execute("CREATE TABLE cdcwh.state (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL)")
    con.execute(
        "CREATE TABLE gold.marts_x (id INTEGER, _version BIGINT); INSERT INTO gold.marts_x VALUES (1, 1)"
    )
    ensure_tables(con)
    return con


def test_a_batch_that_only_deletes_is_gated_by_row_count(tmp_path: Path) -> None:
    con = _one_row_mart(tmp_path)
    specs = parse_file(Path("x.yml"), COUNTED, "gold")
    deleted = BatchResult(batch_id=2, version=2, gold=[ModelResult("marts_x", rows=1, upserts=0, deletes=1)])
    with pytest.raises(GateHeld) as held:
        gate_gold(con, deleted, specs)
    # one row left, min 2: the error test holds the mart; the warn one (min 3) fails too but holds nothing
    assert [r.test_id for r in held.value.held["marts_x"]] == ["marts_x.row_count"]


def test_a_failing_warn_test_does_not_hold_and_an_unneeded_bypass_is_used_up(tmp_path: Path) -> None:
    con = _one_row_mart(tmp_path)
    only_warn = [s for s in parse_file(Path("x.yml"), COUNTED, "gold") if s.severity == "warn"]
    request_bypass(con, "marts_x", "not needed")
    result = BatchResult(batch_id=2, version=1, gold=[ModelResult("marts_x", rows=1, upserts=1, deletes=0)])
    gate_gold(con, result, only_warn)  # no GateHeld
    assert [(r.test_id, r.status, r.failing_rows) for r in result.dq] == [("marts_x.row_count.2", "warn", 1)]
    # the model passed its error tests (it has none): the request is used up, nothing is bypassed
    assert result.bypassed == {}
    assert con.execute("SELECT count(*) FROM cdcwh.gate_bypass").fetchall() == [(0,)]


ORPHANS = """
models:
  - name: marts_items
    columns:
      - name: product_id
        tests:
          - relationships: {to: ref('marts_products'), field: product_id}
"""


def test_a_deleted_parent_holds_the_untouched_children_until_they_go(tmp_path: Path) -> None:
    """The bare gate: a batch deletes product 2, under item 20 it does not touch: the items are held; the
    next batch, changing neither, holds them still; once item 20 is deleted they pass and are released."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA cdcwh; CREATE SCHEMA gold")
    con.execute("CREATE TABLE cdcwh.state (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL)")
    con.execute("CREATE TABLE cdcwh.outbox (version BIGINT, mart VARCHAR, key VARCHAR, op VARCHAR)")
    con.execute("CREATE TABLE gold.marts_products AS SELECT 1 AS product_id, 1::BIGINT AS _version")
    con.execute(
        "CREATE TABLE gold.marts_items AS SELECT * FROM (VALUES (10, 1, 1::BIGINT), (20, 2, 1::BIGINT)) "
        "AS t(item_id, product_id, _version)"
    )
    con.execute("""INSERT INTO cdcwh.outbox VALUES (2, 'marts_products', '{"product_id":2}', 'delete')""")
    ensure_tables(con)
    specs = parse_file(Path("x.yml"), ORPHANS, "gold")

    def batch(version: int, products: int, items: int) -> BatchResult:
        return BatchResult(
            batch_id=version,
            version=version,
            gold=[
                ModelResult("marts_products", rows=1, upserts=0, deletes=products),
                ModelResult("marts_items", rows=2, upserts=0, deletes=items),
            ],
        )

    with pytest.raises(GateHeld) as held:
        gate_gold(con, batch(2, products=1, items=0), specs)
    [failure] = held.value.held["marts_items"]
    assert failure.test_id == "marts_items.relationships.product_id"
    assert failure.sample == [{"item_id": 20, "product_id": 2, "_version": 1}]
    con.execute("INSERT INTO cdcwh.state VALUES (?, 2)", [GATE_HELD + "marts_items"])  # as the batch records
    with pytest.raises(GateHeld):
        gate_gold(con, batch(3, products=0, items=0), specs)  # held: tested on all its rows
    con.execute("DELETE FROM gold.marts_items WHERE item_id = 20")
    passed = batch(4, products=0, items=1)
    gate_gold(con, passed, specs)
    assert [(r.test_id, r.status) for r in passed.dq] == [("marts_items.relationships.product_id", "pass")]
    quiet = batch(5, products=0, items=0)
    con.execute("DELETE FROM cdcwh.state")
    gate_gold(con, quiet, specs)
    assert quiet.dq == [], "neither changed nor held: not tested"


def test_deleting_a_product_under_order_items_holds_the_fact_mart(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Through run_batch: a source delete of a product whose order items stay removes its dim_products row;
    fact_order_items, untouched by the batch, is held by its relationships test (the product goes to the
    outbox, the items' mart stays as it was)."""
    prefix = f"dqo{uuid.uuid4().hex[:6]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(9)
    changes = list(generator.changes(400))
    items = generator.expected_state()["order_items"].values()
    orders = generator.expected_state()["orders"]
    product = next(i["product_id"] for i in items if (i["order_id"],) in orders)
    last = max(changes, key=lambda c: c.lsn)
    gone = replace(
        last,
        table="products",
        op="d",
        key={"id": product},
        before={"id": product} | dict.fromkeys(["sku", "name", "category", "price", "active", "description"]),
        after=None,
        toasted=frozenset(),
        lsn=last.lsn + 1000,
    )
    models = load_models(settings.sql_path / "gold")
    tests = load_tests(settings.sql_path)
    con = open_warehouse(settings)
    try:
        for batch in (changes, [gone]):
            produce_changes(kafka_bootstrap, prefix, batch)
            run_ingest_until_caught_up(settings)
            result = run_batch(
                settings, con, open_catalog(settings), models, max_offsets_per_partition=100_000, tests=tests
            )
        assert set(result.held) == {"fact_order_items"}, result.held
        [failure] = result.held["fact_order_items"]
        assert failure.test_id == "fact_order_items.relationships.product_id"
        assert {r["product_id"] for r in failure.sample} == {product}
        assert "dim_products" in {m.name for m in result.gold}
        published = con.execute(
            "SELECT mart, op FROM cdcwh.outbox WHERE version = ? ORDER BY ALL", [result.version]
        ).fetchall()
        assert ("dim_products", "delete") in published
        assert not [m for m, _ in published if m == "fact_order_items"]
        assert read_state(con, GATE_HELD + "fact_order_items") == result.batch_id
    finally:
        con.close()
