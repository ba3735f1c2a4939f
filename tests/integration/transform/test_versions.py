"""The marts' ``_version`` (``batch.next_version``) on real DuckDB warehouse files: it only grows within a
file, whatever the clock says, and a new file (rebuilt from bronze after the old one was lost, or on a new
machine) starts above what an older file gave out. The whole story through PostgreSQL is
tests/e2e/test_warehouse_loss.py."""

from __future__ import annotations

from pathlib import Path

from cdcwh.config import Settings
from cdcwh.transform.batch import VERSION, next_version
from cdcwh.warehouse import open_warehouse, read_state, write_state

# a BIGINT, and PostgreSQL's bigint: a time in microseconds (about 1.8e15 today) fits for ~290,000 years
BIGINT_MAX = 2**63 - 1


def test_versions_only_grow_within_a_file_and_a_new_file_starts_above_an_older_one(tmp_path: Path) -> None:
    old = open_warehouse(Settings(data_dir=tmp_path / "old"))
    try:
        # a file from before versions were times: its marts carry batch ids; the switch goes forward
        write_state(old, "batch_id", 120)
        first = next_version(old)
        assert 120 < first < BIGINT_MAX
        write_state(old, VERSION, first)
        assert next_version(old) > first
        # a version ahead of the clock (the clock was set back): the next one is still above it
        ahead = first + 3_600_000_000
        write_state(old, VERSION, ahead)
        assert next_version(old) == ahead + 1
        write_state(old, VERSION, first)
        last = next_version(old)
        write_state(old, VERSION, last)
    finally:
        old.close()

    # the file is lost: a new one has no state, and its first version is above the old file's last
    new = open_warehouse(Settings(data_dir=tmp_path / "new"))
    try:
        assert read_state(new, VERSION) is None
        assert next_version(new) > last
        # the audit table names each batch's version
        columns = [
            str(c) for (c,) in new.execute("SELECT column_name FROM (DESCRIBE cdcwh.batches)").fetchall()
        ]
        assert "version" in columns
    finally:
        new.close()
