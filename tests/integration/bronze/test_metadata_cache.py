"""A transaction computes its table metadata once per state (cdcwh.bronze.metadata_cache), and what it
commits is unchanged: a real SQL catalog and file warehouse."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest
from pyiceberg.table import Table, Transaction
from pyiceberg.table import update as table_update

from cdcwh.bronze import metadata_cache
from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings

SCHEMA = pa.schema([pa.field("a", pa.int64())])


@pytest.fixture
def table(tmp_path: Path) -> Table:
    catalog = open_catalog(Settings(data_dir=tmp_path))  # installs the cache
    return catalog.create_table(("bronze", "t"), schema=SCHEMA)


def test_open_catalog_installs_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = property(lambda self: table_update.update_table_metadata(self._table.metadata, self._updates))
    monkeypatch.setattr(Transaction, "table_metadata", original)  # pyiceberg's own, put back afterwards
    open_catalog(Settings(data_dir=tmp_path))
    # the pyiceberg pinned here is one it was checked with: open_catalog put the cache in place
    assert Transaction.__dict__["table_metadata"].fget is metadata_cache._table_metadata


def test_reads_of_one_state_replay_the_updates_once(table: Table) -> None:
    real = table_update.update_table_metadata
    with mock.patch.object(metadata_cache, "update_table_metadata", side_effect=real) as replay:
        tx = table.transaction()
        first = tx.table_metadata
        assert all(tx.table_metadata is first for _ in range(10))
        assert replay.call_count == 1
        tx.set_properties(owner="cdcwh")  # staging rebinds the updates: a new state
        staged = tx.table_metadata
        assert staged is not first
        assert staged.properties["owner"] == "cdcwh" and "owner" not in first.properties
        assert replay.call_count == 2


def test_appends_commit_what_they_staged(table: Table) -> None:
    for i in range(5):
        table.append(pa.table({"a": pa.array([i, i + 10], pa.int64())}, schema=SCHEMA))
        with table.transaction() as tx:
            tx.set_properties(last=str(i))
    rows = sorted(table.scan().to_arrow()["a"].to_pylist())
    assert rows == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert table.properties["last"] == "4"
    assert len(table.metadata.snapshots) == 5
