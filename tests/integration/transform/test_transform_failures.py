"""Nothing lost, nothing stuck: a failed transform batch does not lock the batches after it, and a gold model
that fails is left out of its batch (with the models that read its mart) while silver and the other marts
advance, is recorded and counted, retried by every later batch, and catches up in full once it succeeds.

Real broker, ingest and Iceberg catalog, a real DuckDB warehouse file, ``run_batch`` called in-process so that
a fault can be injected: a ``before_commit`` hook that raises, or a model refresh that raises after it wrote
everything a refresh writes (gold rows, outbox rows, captured images), so that none of those may survive in
the batch that commits. Nothing is published: the outbox keeps every gold change, and replaying it must give
each mart as it is in DuckDB (what the sink would give PostgreSQL). The marts are checked against the
independent reference (marts_reference.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prometheus_client import REGISTRY
from pyiceberg.catalog import Catalog

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator, SourceChange
from cdcwh.models import GoldModel, key_json_sql, load_models, row_json_sql
from cdcwh.transform import refresh as refresh_module
from cdcwh.transform.batch import BatchResult, run_batch
from cdcwh.transform.gold import refresh_model
from cdcwh.warehouse import open_warehouse, quote
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import run_ingest_until_caught_up, settings_for
from tests.support.warehouse import MARTS, produce_changes

BATCH_OFFSETS = 50  # per partition: the backlog takes many batches


@dataclass
class Warehouse:
    settings: Settings
    con: duckdb.DuckDBPyConnection
    catalog: Catalog
    models: list[GoldModel]
    generator: ShopGenerator
    changes: list[SourceChange]

    def batch(self, **kwargs: Any) -> BatchResult:
        return run_batch(
            self.settings,
            self.con,
            self.catalog,
            self.models,
            max_offsets_per_partition=BATCH_OFFSETS,
            **kwargs,
        )

    def drain(self) -> list[BatchResult]:
        results = []
        while (result := self.batch()).batch_id is not None:
            results.append(result)
        return results

    def rows(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def mart(self, name: str) -> list[tuple[Any, ...]]:
        return sorted(self.rows(f"SELECT * FROM gold.{quote(name)}"), key=repr)

    def marts(self) -> dict[str, list[dict[str, Any]]]:
        return {m: self.con.sql(f"SELECT * FROM gold.{m}").to_arrow_table().to_pylist() for m in MARTS}

    def reference(self) -> dict[str, list[dict[str, Any]]]:
        return reference_marts(self.generator.expected_state(), customer_changes_from(self.changes))

    def model(self, name: str) -> GoldModel:
        return next(m for m in self.models if m.name == name)

    def equals_its_sql(self, name: str) -> bool:
        """Whether gold.<name> holds exactly what its SQL gives over silver and gold now (in full)."""
        model = self.model(name)
        columns = [c for (c,) in self.rows(f"SELECT column_name FROM (DESCRIBE gold.{quote(name)})")]
        cols = ", ".join(quote(c) for c in columns if c not in ("_version", "_updated_at"))
        computed = f"SELECT {cols} FROM ({model.sql})"
        stored = f"SELECT {cols} FROM gold.{quote(name)}"
        return self.rows(f"({computed} EXCEPT {stored}) UNION ALL ({stored} EXCEPT {computed})") == []

    def feed(self, name: str) -> dict[str, Any]:
        """The mart as the sink would build it from the outbox: per key the last change, in id order."""
        state: dict[str, Any] = {}
        last_version: dict[str, int] = {}
        for key, op, row, version in self.rows(
            'SELECT key, op, "row", version FROM cdcwh.outbox WHERE mart = ? ORDER BY id', [name]
        ):
            assert version > last_version.get(key, 0), f"{name} {key}: version {version} not newer"
            last_version[key] = version
            if op == "upsert":
                state[key] = json.loads(row)
            else:
                state.pop(key, None)
        return state

    def gold_as_feed(self, name: str) -> dict[str, Any]:
        model = self.model(name)
        described = [
            (str(c), str(t))
            for c, t in self.rows(f"SELECT column_name, column_type FROM (DESCRIBE gold.{quote(name)})")
            if c not in ("_version", "_updated_at")
        ]
        sql = f"SELECT {key_json_sql(model.primary_key)}, {row_json_sql(described)} FROM gold.{quote(name)}"
        return {str(key): json.loads(row) for key, row in self.rows(sql)}

    def assert_feed_follows_gold(self) -> None:
        for name in MARTS:
            assert self.feed(name) == self.gold_as_feed(name), f"the outbox of {name} does not replay to gold"

    def behind(self) -> dict[str, int]:
        rows = self.rows("SELECT name, value FROM cdcwh.state WHERE name LIKE 'gold\\_behind:%' ESCAPE '\\'")
        return {str(name).split(":", 1)[1]: int(value) for name, value in rows}

    def model_rows(self, batch_id: int) -> dict[str, tuple[str, str | None]]:
        rows = self.rows("SELECT model, status, error FROM cdcwh.batch_models WHERE batch_id = ?", [batch_id])
        return {str(model): (str(status), error) for model, status, error in rows}


@pytest.fixture
def warehouse(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Warehouse]:
    prefix = f"tfail{uuid.uuid4().hex[:6]}"  # fresh topics even on a long-lived external broker
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(31)
    changes = list(generator.changes(1500))
    produce_changes(kafka_bootstrap, prefix, changes)
    run_ingest_until_caught_up(settings)
    con = open_warehouse(settings)
    try:
        yield Warehouse(
            settings, con, open_catalog(settings), load_models(settings.sql_path / "gold"), generator, changes
        )
    finally:
        con.close()


class Fault:
    """Makes the refresh of gold.<model> raise while ``on``: after the refresh wrote its gold rows, its outbox
    rows and its captured images, so a batch that kept any of its partial writes would show it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
        self.model = model
        self.on = False
        self.raised = 0

        def refresh(con: duckdb.DuckDBPyConnection, model: GoldModel, *args: Any, **kwargs: Any) -> Any:
            result = refresh_model(con, model, *args, **kwargs)
            if model.name == self.model and self.on:
                self.raised += 1
                con.execute("SELECT error('injected fault in gold.' || ?)", [model.name]).fetchall()
            return result

        monkeypatch.setattr(refresh_module, "refresh_model", refresh)


def sample(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def test_a_failed_batch_does_not_lock_the_batches_after_it(warehouse: Warehouse) -> None:
    w = warehouse
    first = w.batch()
    assert first.batch_id == 1 and first.version is not None

    def crash() -> None:
        raise RuntimeError("injected failure before the commit")

    with pytest.raises(RuntimeError, match="injected failure"):
        w.batch(before_commit=crash)
    assert w.rows("SELECT batch_id, status, version FROM cdcwh.batches ORDER BY 1") == [
        (1, "ok", first.version),
        (2, "failed", None),  # nothing of it was published: no version
    ]
    assert w.rows("SELECT DISTINCT version FROM cdcwh.outbox ORDER BY 1") == [(first.version,)], (
        "2 rolled back"
    )

    retried = w.batch()  # the retry takes the next id instead of colliding with the failed batch's row
    assert retried.batch_id == 3 and retried.status == "ok"
    assert retried.version is not None and retried.version > first.version

    # a warehouse file an earlier release left locked: a failed row at the id the next batch would take
    w.con.execute(
        "INSERT INTO cdcwh.batches (batch_id, started_at, ended_at, status, error) "
        "VALUES (4, now(), now(), 'failed', 'Duplicate key')"
    )
    results = w.drain()
    assert results and results[0].batch_id == 5
    batches = w.rows("SELECT batch_id, status FROM cdcwh.batches ORDER BY 1")
    assert [status for _, status in batches].count("failed") == 2
    assert [b for b, s in batches if s == "ok"] == [1, 3, *range(5, 5 + len(results))]
    # versions go forward with the batches, and the marts carry only versions of committed batches
    versions = [
        v for (v,) in w.rows("SELECT version FROM cdcwh.batches WHERE status = 'ok' ORDER BY batch_id")
    ]
    assert versions == sorted(set(versions)) and versions[1] == retried.version
    stamped = {v for m in MARTS for (v,) in w.rows(f"SELECT DISTINCT _version FROM gold.{quote(m)}")}
    assert stamped and stamped <= set(versions)

    assert compare_marts(w.marts(), w.reference()) == []
    w.assert_feed_follows_gold()


def test_a_failing_model_is_left_out_and_catches_up_in_full(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = warehouse
    fault = Fault(monkeypatch, "daily_revenue")
    assert w.batch().batch_id == 1
    revenue_before = w.mart("daily_revenue")
    others_before = {m: w.mart(m) for m in MARTS if m != "daily_revenue"}
    failures_before = sample("cdcwh_transform_model_failures_total", "daily_revenue")

    fault.on = True
    failing = [w.batch(), w.batch()]
    assert fault.raised == 2
    for result in failing:
        assert result.batch_id is not None
        assert (
            result.failed.keys() == {"daily_revenue"} and "injected fault" in result.failed["daily_revenue"]
        )
        assert result.skipped == {}, "no model reads gold.daily_revenue"
        assert result.status == "partial"
        assert {m.name for m in result.gold} == set(MARTS) - {"daily_revenue"}
        assert w.model_rows(result.batch_id)["daily_revenue"][0] == "failed"
        assert w.model_rows(result.batch_id)["orders"] == ("ok", None)
    assert sum(r.silver.get("orders", 0) for r in failing) > 0, "orders changed while the mart failed"
    # silver and the other marts advanced; the failed mart kept none of its writes
    assert sum(r.gold_changes for r in failing) > 0
    assert any(w.mart(m) != rows for m, rows in others_before.items())
    assert w.mart("daily_revenue") == revenue_before
    ids = [r.batch_id for r in failing]
    assert w.rows(
        "SELECT count(*) FROM cdcwh.outbox WHERE mart = 'dim_products' AND version IN (?, ?)",
        [r.version for r in failing],
    ) == [(0,)]
    assert w.rows("SELECT status, error FROM cdcwh.batches WHERE batch_id = ?", [ids[1]])[0][0] == "partial"
    assert "gold.daily_revenue failed" in str(
        w.rows("SELECT error FROM cdcwh.batches WHERE batch_id = ?", [ids[1]])[0][0]
    )
    assert w.behind() == {"daily_revenue": ids[0]}, "behind since the first batch it missed"
    assert sample("cdcwh_transform_model_failed", "daily_revenue") == 1
    assert sample("cdcwh_transform_model_behind", "daily_revenue") == 1
    assert sample("cdcwh_transform_model_failures_total", "daily_revenue") - failures_before == 2
    assert sample("cdcwh_transform_model_failed", "orders") == 0

    fault.on = False
    caught_up = w.batch()
    assert caught_up.status == "ok" and caught_up.failed == {}
    assert "daily_revenue" in {m.name for m in caught_up.gold}
    assert w.equals_its_sql("daily_revenue"), "a full recompute, not only the rows this batch touched"
    assert w.behind() == {}
    assert sample("cdcwh_transform_model_failed", "daily_revenue") == 0
    assert sample("cdcwh_transform_model_behind", "daily_revenue") == 0
    w.assert_feed_follows_gold()  # the caught-up rows are in the change feed

    w.drain()
    assert compare_marts(w.marts(), w.reference()) == []
    w.assert_feed_follows_gold()


def test_the_models_reading_a_failed_mart_are_skipped_and_catch_up(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = warehouse
    fault = Fault(monkeypatch, "orders")
    assert w.batch().batch_id == 1
    before = {m: w.mart(m) for m in ("orders", "customers")}

    fault.on = True
    failing = w.drain()  # the whole rest of the backlog, orders failing in every batch
    assert len(failing) > 1 and fault.raised == len(failing)
    for result in failing:
        assert result.batch_id is not None
        assert result.failed.keys() == {"orders"}
        assert result.skipped.keys() == {"customers"} and "gold.orders" in result.skipped["customers"]
        assert {m.name for m in result.gold} == set(MARTS) - {"orders", "customers"}
        statuses = w.model_rows(result.batch_id)
        assert (statuses["orders"][0], statuses["customers"][0]) == ("failed", "skipped")
    assert {m: w.mart(m) for m in before} == before
    assert w.behind() == {"orders": failing[0].batch_id, "customers": failing[0].batch_id}
    assert sample("cdcwh_transform_model_failed", "customers") == 0
    assert sample("cdcwh_transform_model_behind", "customers") == 1
    # the marts not over gold.orders are right already
    expected = w.reference()
    actual = w.marts()
    for mart in ("orders", "customers"):
        del expected[mart], actual[mart]
    assert compare_marts(actual, expected) == []

    fault.on = False
    assert w.batch().batch_id is None, "nothing new in bronze"
    # the service's first batch after a restart retries the models behind without new bronze rows
    retry = w.batch(retry_behind=True)
    assert retry.batch_id is not None and retry.bronze_rows == 0 and retry.status == "ok"
    assert {"orders", "customers"} <= {m.name for m in retry.gold}
    assert w.behind() == {}
    assert w.equals_its_sql("orders") and w.equals_its_sql("customers")
    assert w.batch(retry_behind=True).batch_id is None, "nothing behind, nothing new"

    assert compare_marts(w.marts(), w.reference()) == []
    w.assert_feed_follows_gold()
