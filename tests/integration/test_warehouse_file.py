"""The warehouse file survives a kill during its creation: the DuckDB file is made under a name of its own
and linked into place, so the path holds either nothing or a whole DuckDB file; and a zero-byte file, which
DuckDB refuses for good and which an interrupted in-place creation left (the chaos test saw every transform
restart fail on one), is made anew. A non-empty file that DuckDB refuses is never touched. The kills land at
the fault points of the creation (cdcwh.faults) and, as the old failure did, the moment a file appears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdcwh import faults
from cdcwh.config import Settings
from cdcwh.errors import InfrastructureError
from cdcwh.warehouse import open_warehouse, table_exists, warehouse_path

OPENER = """
import sys
from pathlib import Path
from cdcwh import faults
from cdcwh.config import Settings
from cdcwh.warehouse import open_warehouse
settings = Settings(data_dir=Path(sys.argv[1]))
print("ready", flush=True)
open_warehouse(settings).close()
print("done", flush=True)
"""


def test_a_zero_byte_file_left_by_an_interrupted_creation_is_made_anew(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = warehouse_path(settings)
    path.write_bytes(b"")
    con = open_warehouse(settings)
    try:
        assert table_exists(con, "cdcwh", "watermarks")
    finally:
        con.close()
    assert path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".creating")] == []


def test_a_file_duckdb_refuses_is_never_replaced(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = warehouse_path(settings)
    path.write_bytes(b"not a database, but somebody's bytes")
    with pytest.raises(InfrastructureError, match="cannot open the warehouse"):
        open_warehouse(settings)
    assert path.read_bytes() == b"not a database, but somebody's bytes"


@pytest.mark.parametrize("point", [faults.WAREHOUSE_CREATED, faults.WAREHOUSE_LINKED])
def test_a_kill_inside_the_creation_leaves_an_openable_warehouse_and_no_leftover(
    tmp_path: Path, point: str
) -> None:
    """Killed with the file made under its own name (not linked: nothing at the path) or just linked (the
    path whole, its own name still there): the next open works and cleans up."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env |= {faults.POINT_ENV: point, faults.PAUSE_ENV: "60"}
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(tmp_path)], env=env, stdout=subprocess.DEVNULL
    )
    marker = tmp_path / f"fault-{point}"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert opener.poll() is None and time.monotonic() < deadline, "the opener never reached the point"
        time.sleep(0.02)
    opener.send_signal(signal.SIGKILL)
    opener.wait(timeout=30)
    path = warehouse_path(Settings(data_dir=tmp_path))
    assert path.exists() == (point == faults.WAREHOUSE_LINKED)
    assert (tmp_path / ".warehouse.duckdb.creating").exists()
    con = open_warehouse(Settings(data_dir=tmp_path))
    try:
        assert table_exists(con, "cdcwh", "watermarks")
    finally:
        con.close()
    if point == faults.WAREHOUSE_CREATED:  # a linked file's own name is left (a second name, harmless)
        assert not (tmp_path / ".warehouse.duckdb.creating").exists()


def test_a_kill_the_moment_the_file_appears_leaves_an_openable_warehouse(tmp_path: Path) -> None:
    """The worst moment: the opener is SIGKILLed as soon as anything exists at the path (in-place creation
    left a zero-byte file there nearly every time)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for trial in range(4):
        data = tmp_path / f"t{trial}"
        path = warehouse_path(Settings(data_dir=data))
        opener = subprocess.Popen(
            [sys.executable, "-c", OPENER, str(data)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert opener.stdout is not None
        assert opener.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not path.exists() and opener.poll() is None and time.monotonic() < deadline:
            os.sched_yield()  # no sleep: the window is a fraction of a millisecond
        opener.send_signal(signal.SIGKILL)
        opener.wait(timeout=30)
        assert path.exists() and path.stat().st_size > 0, "a half-made file at the path"
        con = open_warehouse(Settings(data_dir=data))  # never "not a valid DuckDB database file"
        try:
            assert table_exists(con, "cdcwh", "watermarks")
        finally:
            con.close()
