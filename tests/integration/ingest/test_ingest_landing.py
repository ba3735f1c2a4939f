"""N generated events land in bronze exactly once, with decoded values equal to the generator's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cdcwh.generate import SourceChange
from tests.support.pipeline import TABLES, bronze, produce_shop, run_ingest_until_caught_up, settings_for


def expected_row(change: SourceChange) -> dict[str, Any]:
    """The after image as bronze must hold it: toasted columns null (listed in __toasted)."""
    assert change.after is not None
    return {k: (None if k in change.toasted else v) for k, v in change.after.items()}


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> dict[str, Any]:
    prefix = "land1"
    settings = settings_for(tmp_path_factory.mktemp("land"), kafka_bootstrap, prefix)
    generator, changes = produce_shop(kafka_bootstrap, prefix, events=4000, seed=3)
    run_ingest_until_caught_up(settings)
    tables = {t: bronze(settings, f"{prefix}.public.{t}") for t in TABLES}
    return {"settings": settings, "changes": changes, "tables": tables, "prefix": prefix}


def test_every_offset_lands_exactly_once(landed: dict[str, Any]) -> None:
    changes: list[SourceChange] = landed["changes"]
    deletes = Counter(c.table for c in changes if c.op == "d")
    per_table = Counter(c.table for c in changes)
    for table, rows in landed["tables"].items():
        positions = list(zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True))
        assert len(positions) == len(set(positions)), f"{table}: an offset landed twice"
        # change events plus one tombstone per delete, nothing lost
        assert rows.num_rows == per_table[table] + deletes[table]
        for partition in {p for p, _ in positions}:
            offsets = sorted(o for p, o in positions if p == partition)
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "contiguous offsets"
        ops = Counter(rows["__op"].to_pylist())
        assert ops["tombstone"] == deletes[table]


def test_decoded_values_equal_the_source_values(landed: dict[str, Any]) -> None:
    changes: list[SourceChange] = landed["changes"]
    for table, rows in landed["tables"].items():
        by_lsn = {c.lsn: c for c in changes if c.table == table}
        data = rows.filter(pa.compute.is_in(rows["__op"], pa.array(["r", "c", "u"]))).to_pylist()
        assert len(data) == sum(1 for c in by_lsn.values() if c.op != "d")
        for row in data:
            change = by_lsn[row["__lsn"]]
            want = expected_row(change)
            got = {k: row[k] for k in want}
            assert got == want, (table, change.lsn)
            assert set(row["__toasted"] or []) == set(change.toasted)
            assert row["__key"] == change.key
            assert row["__snapshot"] == change.snapshot
            assert row["__tx_id"] == change.tx_id
            assert int(row["__source_ts"].timestamp() * 1000) == change.ts_ms


def test_deletes_carry_the_key_and_before_image(landed: dict[str, Any]) -> None:
    changes: list[SourceChange] = landed["changes"]
    for table, rows in landed["tables"].items():
        deletes = rows.filter(pa.compute.equal(rows["__op"], "d")).to_pylist()
        by_lsn = {c.lsn: c for c in changes if c.table == table and c.op == "d"}
        assert len(deletes) == len(by_lsn)
        for row in deletes:
            change = by_lsn[row["__lsn"]]
            assert row["__key"] == change.key
            assert change.before is not None
            assert {k: v for k, v in (row["__before"] or {}).items() if v is not None} == {
                k: v for k, v in change.before.items() if v is not None
            }


def test_rerunning_ingest_lands_nothing_twice(landed: dict[str, Any], tmp_path: Path) -> None:
    settings = landed["settings"]
    # a new consumer group re-reads every topic from the start: all of it is already landed
    again = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"group_prefix": "other"})})
    run_ingest_until_caught_up(again)
    for table in TABLES:
        rows = bronze(settings, f"{landed['prefix']}.public.{table}")
        assert rows.num_rows == landed["tables"][table].num_rows
