"""A reset log (a restarted memory-only broker) is landed, not skipped; the same log stays exactly-once.

Uses its own embedded broker (not the session's), because the test restarts it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.bronze.incarnation import log_marks
from cdcwh.embedded import EmbeddedBroker
from cdcwh.replay.topic import replay_topic
from tests.support.metrics import counter_total
from tests.support.pipeline import (
    TABLES,
    bronze,
    produce_shop,
    run_ingest_until_caught_up,
    settings_for,
)


def expected_records(changes: list[object]) -> Counter[str]:
    """Records per table: one per change plus a tombstone per delete."""
    counts: Counter[str] = Counter()
    for change in changes:
        counts[change.table] += 2 if change.op == "d" else 1  # type: ignore[attr-defined]
    return counts


def test_a_restarted_broker_is_landed_again_and_replays_stay_exactly_once(tmp_path: Path) -> None:
    prefix = "reset1"
    with EmbeddedBroker(tmp_path / "b1" / "run", tmp_path / "b1" / "logs") as first:
        settings = settings_for(tmp_path / "data", first.address, prefix)
        _, changes_a = produce_shop(first.address, prefix, events=1500, seed=1)
        run_ingest_until_caught_up(settings)
        before = bronze(settings, f"{prefix}.public.orders")
    old = set(zip(before["__partition"].to_pylist(), before["__offset"].to_pylist(), strict=True))
    with EmbeddedBroker(tmp_path / "b2" / "run", tmp_path / "b2" / "logs") as second:
        settings = settings_for(tmp_path / "data", second.address, prefix)
        _, changes_b = produce_shop(second.address, prefix, events=800, seed=2)  # a shorter log
        resets = counter_total("cdcwh_log_resets", topic=f"{prefix}.public.orders")
        run_ingest_until_caught_up(settings)
        assert counter_total("cdcwh_log_resets", topic=f"{prefix}.public.orders") > resets
        want = expected_records(changes_a) + expected_records(changes_b)
        tables = {t: bronze(settings, f"{prefix}.public.{t}") for t in TABLES}
        for table, rows in tables.items():
            assert rows.num_rows == want[table], table
            positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
            assert len(positions) == len(set(positions)), f"{table}: two records share an __offset"
        # the second log's records come after the first's in each partition (the transform's order)
        catalog = open_catalog(settings)
        orders = catalog.load_table(
            (settings.iceberg.namespace, bronze_table_name(f"{prefix}.public.orders"))
        )
        marks = log_marks(orders)
        assert marks and all(m.epoch == 1 and m.base > 0 for m in marks.values())
        rows = tables["orders"]
        positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
        for (_, partition), mark in marks.items():
            first_log = [o for p, o in positions if p == partition and (p, o) in old]
            second_log = [o for p, o in positions if p == partition and (p, o) not in old]
            assert second_log and min(second_log) == mark.base  # Kafka offset 0 of the new log
            assert not first_log or max(first_log) < mark.base

        # a replay of the same (second) log from its start lands nothing twice
        replayed = replay_topic(settings, f"{prefix}.public.orders", from_offset=0)
        assert replayed["landed"] == 0 and replayed["skipped"] == replayed["read"] > 0
        assert log_marks(catalog.load_table(orders.name())) == marks  # no further incarnation
        again = bronze(settings, f"{prefix}.public.orders")
        assert again.num_rows == want["orders"]


@pytest.mark.parametrize("events", [300])
def test_the_same_log_is_not_taken_for_a_new_one(tmp_path: Path, kafka_bootstrap: str, events: int) -> None:
    """Group offsets reset on the same broker (a redelivery of everything): all skipped, no reset."""
    prefix = f"same{events}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=events, seed=5)
    run_ingest_until_caught_up(settings)
    again = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    resets = counter_total("cdcwh_log_resets")
    run_ingest_until_caught_up(again, CDCWH_KAFKA__GROUP_PREFIX=f"{prefix}-other")
    assert counter_total("cdcwh_log_resets") == resets
    catalog = open_catalog(settings)
    for table in TABLES:
        bronze_table = catalog.load_table(
            (settings.iceberg.namespace, bronze_table_name(f"{prefix}.public.{table}"))
        )
        assert all(m.epoch == 0 and m.base == 0 for m in log_marks(bronze_table).values()), table
    want = expected_records(changes)
    for table in TABLES:
        assert bronze(settings, f"{prefix}.public.{table}").num_rows == want[table]
