"""Generator -> broker -> ingest -> transform: silver equals the generator's final state and gold equals an
independent computation of DESIGN section 7 (marts_reference.py), for several seeds, one batch or many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdcwh.generate import ShopGenerator
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import TABLES, run_ingest_until_caught_up, settings_for
from tests.support.warehouse import (
    ingest_and_transform,
    produce_changes,
    read_marts,
    read_silver,
    run_transform_once,
)


def assert_silver_equals_state(
    settings: Any, state: dict[str, dict[tuple[Any, ...], dict[str, Any]]]
) -> None:
    for table in TABLES:
        rows = read_silver(settings, table)
        got = {(row["id"],): row for row in rows}
        assert len(got) == len(rows), f"{table}: duplicate keys in silver"
        assert got.keys() == state[table].keys(), table
        for key, want in state[table].items():
            assert got[key] == want, (table, key)


@pytest.mark.parametrize("seed", [1, 2])
def test_one_large_batch(tmp_path: Path, kafka_bootstrap: str, seed: int) -> None:
    prefix = f"tf{seed}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(seed)
    changes = list(generator.changes(3000))
    produce_changes(kafka_bootstrap, prefix, changes)
    ingest_and_transform(settings)
    state = generator.expected_state()
    assert_silver_equals_state(settings, state)
    expected = reference_marts(state, customer_changes_from(changes))
    assert compare_marts(read_marts(settings), expected) == []


def test_many_small_batches_equal_one_large(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = "tfsmall"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    generator = ShopGenerator(3)
    changes = list(generator.changes(2500))
    chunks = [changes[i : i + 600] for i in range(0, len(changes), 600)]
    for chunk in chunks:
        produce_changes(kafka_bootstrap, prefix, chunk)
        run_ingest_until_caught_up(settings)
        # tiny transform batches: at most 50 offsets per partition each
        run_transform_once(settings, CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION="50")
    state = generator.expected_state()
    assert_silver_equals_state(settings, state)
    expected = reference_marts(state, customer_changes_from(changes))
    assert compare_marts(read_marts(settings), expected) == []
