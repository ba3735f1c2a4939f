"""``cdcwh replay sink`` (``replay.backfill``) before the transform has built every mart: it backfills what
exists and names what it skipped, instead of failing on the first missing gold table."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from cdcwh.generate import ShopGenerator
from cdcwh.replay.backfill import backfill
from tests.support.pipeline import env_overrides, run_ingest_until_caught_up, settings_for
from tests.support.warehouse import produce_changes, run_transform_once


def test_a_backfill_loads_the_built_marts_and_names_the_others(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    prefix, schema = "bfpart", "marts_bfpart"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    customers = [c for c in ShopGenerator(4).changes(400) if c.table == "customers"]
    produce_changes(kafka_bootstrap, prefix, customers)  # only customers: the order marts cannot be built
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)
    summary = backfill(
        env_overrides(settings, CDCWH_POSTGRES__DSN=postgres_dsn, CDCWH_POSTGRES__SCHEMA=schema)
    )
    assert summary["orders"] == {"skipped": 1}
    assert summary["dim_customers"]["loaded"] > 0
    with psycopg.connect(postgres_dsn) as conn:
        loaded = conn.execute(
            sql.SQL("SELECT count(DISTINCT customer_id) FROM {}").format(
                sql.Identifier(schema, "dim_customers")
            )
        ).fetchone()
    assert loaded is not None and loaded[0] == len({c.key_tuple() for c in customers})
