"""Losing the DuckDB warehouse file does not break the PostgreSQL marts.

Several transform batches reach PostgreSQL; then ``warehouse.duckdb`` (and its ``.wal``) is deleted, as on a
lost disk or a transform moved to a new machine without it. The transform rebuilds silver and gold from
bronze in a new file, whose batch ids start again at 1; more source changes follow. The marts' ``_version``
is not the batch id (docs/transform.md), so the new file's changes are newer than everything PostgreSQL
holds: PostgreSQL equals gold, ``_version`` included, and the independent reference (marts_reference.py).
Before, the new file's versions restarted at 1 and PostgreSQL ignored every change of a key it already held.

Then the file is lost a second time while source changes (deletes among them) arrive before the transform
runs again: a row deleted in that window is never in the new gold, so no delete of it is published; ``cdcwh
replay sink`` (docs/operations.md, "Recovery after a crash") makes PostgreSQL equal to gold again.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator, SourceChange, replay_state
from cdcwh.replay.backfill import backfill
from tests.support.marts import differences, gold_marts, pg_marts
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import (
    env_overrides,
    run_ingest_until_caught_up,
    run_sink_until_caught_up,
)
from tests.support.warehouse import MARTS, produce_changes, run_transform_once

SMALL_BATCHES = {"CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION": "25"}


def lose_warehouse(settings: Settings) -> None:
    path = Path(settings.data_dir) / "warehouse.duckdb"
    assert path.exists()
    path.unlink()
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def batch_ids(settings: Settings) -> list[int]:
    con = duckdb.connect(str(Path(settings.data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        return [int(b) for (b,) in con.execute("SELECT batch_id FROM cdcwh.batches ORDER BY 1").fetchall()]
    finally:
        con.close()


def versions(marts: dict[str, list[dict[str, object]]]) -> set[int]:
    return {int(str(row["_version"])) for mart in MARTS for row in marts[mart]}


def test_losing_the_warehouse_file_keeps_postgres_equal_to_gold(
    pipeline_settings: Settings, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str, unique_prefix: str
) -> None:
    prefix, schema = unique_prefix, pg_schema
    settings = env_overrides(
        pipeline_settings, CDCWH_POSTGRES__DSN=postgres_dsn, CDCWH_POSTGRES__SCHEMA=schema
    )
    generator = ShopGenerator(17)
    changes = list(generator.changes(3000))
    first, second, third = changes[:1500], changes[1500:2300], changes[2300:]

    def pipeline(part: list[SourceChange], **transform: str) -> None:
        produce_changes(kafka_bootstrap, prefix, part)
        run_ingest_until_caught_up(settings)
        run_transform_once(settings, **transform)
        run_sink_until_caught_up(settings)

    # several batches through to PostgreSQL
    pipeline(first, **SMALL_BATCHES)
    assert len(batch_ids(settings)) >= 6
    before = pg_marts(postgres_dsn, schema)
    assert differences(before, gold_marts(settings)) == []

    # the file is lost; the transform runs on: a new file, rebuilt from bronze, its batch ids from 1 again
    lose_warehouse(settings)
    run_transform_once(settings)
    run_sink_until_caught_up(settings)
    assert batch_ids(settings)[0] == 1
    rebuilt = gold_marts(settings)
    assert min(versions(rebuilt)) > max(versions(before)), "the new file's versions go forward"
    assert differences(pg_marts(postgres_dsn, schema), rebuilt) == []

    # more changes (updates and deletes of rows PostgreSQL has): every one reaches PostgreSQL
    pipeline(second, **SMALL_BATCHES)
    actual = pg_marts(postgres_dsn, schema)
    assert differences(actual, gold_marts(settings)) == []
    expected = reference_marts(replay_state(first + second), customer_changes_from(first + second))
    assert compare_marts(actual, expected) == []

    # lost again, with changes arriving before the transform runs: the rebuild publishes no delete of a row
    # deleted meanwhile, which `cdcwh replay sink` removes (and any other difference with gold)
    lose_warehouse(settings)
    produce_changes(kafka_bootstrap, prefix, third)
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    run_sink_until_caught_up(settings)
    backfill(settings)  # `cdcwh replay sink`
    actual = pg_marts(postgres_dsn, schema)
    assert differences(actual, gold_marts(settings)) == []
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    assert compare_marts(actual, expected) == []
    assert all(actual[m] for m in MARTS)
