"""Processes opening a new catalog at the same moment all get it (``cdcwh run`` starts ingest and transform
together on a fresh data dir). Real processes (spawned: none of this test process's threads comes along) and
the real sqlite SQL catalog; without the retry in ``open_catalog`` the loser of the race failed on "table
iceberg_tables already exists" in most trials."""

from __future__ import annotations

import multiprocessing
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings

TRIALS = 8
PROCESSES = 3
WAIT_S = 60


def open_catalogs(base: Path, start: Barrier, results: Queue[tuple[int, str, list[tuple[str, ...]]]]) -> None:
    """One process: for each trial, wait for the others, then open that trial's new catalog."""
    for trial in range(TRIALS):
        start.wait(WAIT_S)
        try:
            namespaces = sorted(open_catalog(Settings(data_dir=base / f"trial{trial}")).list_namespaces())
            results.put((trial, "ok", namespaces))
        except Exception as exc:  # reported to the test
            results.put((trial, f"{type(exc).__name__}: {exc}"[:300], []))


def test_processes_opening_a_new_catalog_at_once_all_get_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=open_catalogs, args=(tmp_path, start, results), daemon=True)
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=WAIT_S) for _ in range(TRIALS * PROCESSES)]
        for process in processes:
            process.join(WAIT_S)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    failed = [(trial, outcome) for trial, outcome, _ in outcomes if outcome != "ok"]
    assert failed == []
    assert all(namespaces == [("bronze",)] for _, _, namespaces in outcomes)
