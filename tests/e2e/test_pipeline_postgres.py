"""The whole pipeline, each service run in-process through its own entry point: generator -> broker ->
ingest -> transform -> sink -> PostgreSQL,
compared with an independent computation of every mart (tests/support/marts_reference.py).
Runs on the embedded Postgres, or on CDCWH_TEST_POSTGRES_DSN when set (conftest.postgres_dsn)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from cdcwh.generate import ShopGenerator
from tests.support.marts import read_postgres_marts
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import run_ingest_until_caught_up, run_sink_until_caught_up, settings_for
from tests.support.warehouse import MARTS, produce_changes, run_transform_once


def test_generator_to_postgres_matches_the_reference(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    prefix = "e2e1"
    schema = "marts_e2e1"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(5)
    changes = list(generator.changes(3000))
    half = len(changes) // 2
    # two rounds, so the sink applies updates and deletes on top of existing rows
    for part in (changes[:half], changes[half:]):
        produce_changes(kafka_bootstrap, prefix, part)
        run_ingest_until_caught_up(settings)
        run_transform_once(settings)
        run_sink_until_caught_up(settings, CDCWH_POSTGRES__DSN=postgres_dsn, CDCWH_POSTGRES__SCHEMA=schema)
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    actual = read_postgres_marts(postgres_dsn, schema)
    assert compare_marts(actual, expected) == []
    assert all(actual[m] for m in MARTS), "every mart has rows"
    # money is exact in Postgres: sums numeric(38,2), a row's price numeric(12,2)
    with psycopg.connect(postgres_dsn) as conn:
        kinds = conn.execute(
            "SELECT DISTINCT data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND column_name IN ('amount', 'revenue', 'lifetime_value', 'price')",
            (schema,),
        ).fetchall()
    assert sorted(kinds) == [("numeric", 12, 2), ("numeric", 38, 2)]
