"""Processes opening a new catalog at the same moment all get it (``cdcwh run`` starts ingest and transform
together on a fresh data dir). Real processes and the real sqlite SQL catalog; without the retry in
``open_catalog`` the loser of the race failed on "table iceberg_tables already exists" in most trials."""

from __future__ import annotations

import multiprocessing
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings

TRIALS = 8
PROCESSES = 3


def open_after(data_dir: Path, start: Barrier, results: Queue[tuple[str, list[tuple[str, ...]]]]) -> None:
    start.wait()
    try:
        catalog = open_catalog(Settings(data_dir=data_dir))
        results.put(("ok", sorted(catalog.list_namespaces())))
    except Exception as exc:  # reported to the test
        results.put((f"{type(exc).__name__}: {exc}"[:300], []))


def test_processes_opening_a_new_catalog_at_once_all_get_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for trial in range(TRIALS):
        data_dir = tmp_path / f"trial{trial}"
        start, results = context.Barrier(PROCESSES), context.Queue()
        processes = [
            context.Process(target=open_after, args=(data_dir, start, results)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(60)
        assert [outcome for outcome, _ in outcomes] == ["ok"] * PROCESSES, outcomes
        assert all(namespaces == [("bronze",)] for _, namespaces in outcomes)
