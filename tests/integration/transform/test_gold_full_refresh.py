"""When incremental gold must give way to a full recompute: a batch whose only change is a truncate (it
applies no row, yet empties a silver table), and a rebuild that stops before its final gold batch (its silver
batches captured nothing, so the transform's next batch must recompute gold in full). Real broker, ingest and
Iceberg catalog, the transform CLI, and the marts compared with the independent reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import orjson
import pytest
from confluent_kafka import Producer

from cdcwh.generate import ShopGenerator
from cdcwh.generate.debezium import value_payload
from cdcwh.replay.rebuild import rebuild
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import settings_for
from tests.support.warehouse import (
    ingest_and_transform,
    produce_changes,
    read_marts,
    run_transform_once,
)


def test_a_batch_holding_only_a_truncate_recomputes_gold(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = "gfr1"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(11)
    changes = list(generator.changes(800))
    produce_changes(kafka_bootstrap, prefix, changes)
    ingest_and_transform(settings)
    state = generator.expected_state()
    assert state["payments"], "the stream has payments to truncate"

    # TRUNCATE payments, after every change above: Debezium sends it without a key and without row images
    last = max(changes, key=lambda c: c.lsn)
    truncate = dataclasses.replace(last, table="payments", op="t", before=None, after=None, lsn=last.lsn + 8)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(f"{prefix}.public.payments", value=orjson.dumps(value_payload(truncate, prefix=prefix)))
    assert producer.flush(10) == 0
    ingest_and_transform(settings)

    state["payments"] = {}
    expected = reference_marts(state, customer_changes_from(changes))
    actual = read_marts(settings)
    assert compare_marts(actual, expected) == []
    assert all(row["amount"] == 0 for row in actual["orders"]), "no order keeps a payment"


def test_a_rebuild_that_stops_early_leaves_gold_to_a_full_recompute(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = "gfr2"
    settings = settings_for(
        tmp_path / "data", kafka_bootstrap, prefix, transform={"max_offsets_per_partition": 50}
    )
    generator = ShopGenerator(12)
    changes = list(generator.changes(1500))
    produce_changes(kafka_bootstrap, prefix, changes)
    ingest_and_transform(settings)
    # what a rebuild is for: silver (and the gold made from it) holds a row bronze does not justify
    phantom = 10_000_000
    with duckdb.connect(str(settings.data_dir / "warehouse.duckdb")) as con:
        volume = con.execute("SELECT * FROM cdcwh.volume_minutes ORDER BY ALL").fetchall()
        con.execute(
            "INSERT INTO silver.orders SELECT * REPLACE (? AS id) FROM silver.orders LIMIT 1", [phantom]
        )
        con.execute(
            "INSERT INTO gold.orders SELECT * REPLACE (? AS order_id) FROM gold.orders LIMIT 1", [phantom]
        )

    def stop_after_the_first_batch(table: str, applied: int) -> None:
        raise KeyboardInterrupt  # the operator's Ctrl-C, between two of the rebuild's silver batches

    with pytest.raises(KeyboardInterrupt):
        rebuild(settings, ["orders"], progress=stop_after_the_first_batch)
    # the service resumes: its batches re-read the rest of orders (nothing else is new), each touching only
    # the orders it reads, none of them the phantom
    run_transform_once(settings)

    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    actual = read_marts(settings)
    assert phantom not in {row["order_id"] for row in actual["orders"]}
    assert compare_marts(actual, expected) == []
    with duckdb.connect(str(settings.data_dir / "warehouse.duckdb"), read_only=True) as con:
        again = con.execute("SELECT * FROM cdcwh.volume_minutes ORDER BY ALL").fetchall()
    assert any(table == "orders" for table, _, _ in volume)
    assert again == volume, "the rebuilt orders' changes per minute are counted again, once"
