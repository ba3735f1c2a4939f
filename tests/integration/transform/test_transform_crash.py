"""Killing transform with SIGKILL mid-batch and restarting yields the same silver, gold and published changes
as an uninterrupted run: no lost and no doubled gold changes.

One generated workload is ingested into two data dirs (same topics, each its own consumer group and gold
topics). A runs ``transform --once`` undisturbed. B runs the long-running ``cdcwh transform`` and is killed
with SIGKILL: inside the first batch before its DuckDB commit, after the commit before the outbox is
published (both through the service's fault-injection pauses), then twice at random moments; ``transform
--once`` finishes it. Both use the same batch size, so B redoes exactly A's batches.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cdcwh.config import Settings
from cdcwh.generate import ShopGenerator
from tests.integration.transform.scenario import (
    FeedMessage,
    column_types,
    gold_state,
    query,
    read_feed,
    replay,
    table_rows,
    tables_in,
)
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import TABLES, cli_env, run_ingest_until_caught_up, settings_for
from tests.support.warehouse import MARTS, produce_changes, read_marts, run_transform_once

PREFIX = f"tcrash{uuid.uuid4().hex[:6]}"  # fresh topics even on a long-lived external broker
BATCH = {"CDCWH_TRANSFORM__MAX_OFFSETS_PER_PARTITION": "50"}
BATCH_LOG = re.compile(r"batch \d+: ")


def start_transform(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = cli_env(settings, CDCWH_TRANSFORM__INTERVAL_S="0.2", **BATCH, **extra)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cdcwh.cli", "transform"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def kill_at_fault(settings: Settings, point: str, log: Path) -> None:
    """Run the service until it pauses at ``point`` (the marker file appears), then SIGKILL it."""
    marker = settings.data_dir / f"fault-{point}"
    process = start_transform(settings, log, CDCWH_FAULT_POINT=point, CDCWH_FAULT_PAUSE_S="30")
    deadline = time.monotonic() + 90
    # the marker is created before its line is written: wait for the line, not for the file
    while not (marker.exists() and marker.read_text().endswith("\n")):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no pause at {point}: {log.read_text()[-3000:]}"
        time.sleep(0.05)
    kill(process)
    assert marker.read_text().splitlines() == ["paused"]


def kill_mid_run(settings: Settings, log: Path, after_batches: int, rng: random.Random) -> float:
    """Run the service until it has logged ``after_batches`` more batches, then SIGKILL it at a random moment
    of the following 0.4 s (inside the next batch, its publish, or the pause between batches)."""
    start = log.stat().st_size if log.exists() else 0
    process = start_transform(settings, log)
    deadline = time.monotonic() + 90
    while len(BATCH_LOG.findall(log.read_bytes()[start:].decode(errors="replace"))) < after_batches:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"fewer than {after_batches} batches: {log.read_text()[-3000:]}"
        time.sleep(0.02)
    delay = rng.uniform(0.0, 0.4)
    time.sleep(delay)
    kill(process)
    return delay


def count(settings: Settings, sql: str) -> int:
    return int(query(settings, sql)[0]["n"])


def by_batch(settings: Settings, state: dict[str, dict[Any, dict[str, Any]]]) -> dict[str, dict[Any, Any]]:
    """``state`` with each row's ``_version`` replaced by the id of the batch that gave out that version."""
    batch_of = {
        r["version"]: r["batch_id"] for r in query(settings, "SELECT batch_id, version FROM cdcwh.batches")
    }
    return {
        mart: {key: {**row, "_version": batch_of[row["_version"]]} for key, row in rows.items()}
        for mart, rows in state.items()
    }


def changes_by_key(feed: dict[str, list[FeedMessage]]) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """Per (mart, key): the distinct (version, message) pairs in topic order, checking that a version
    published more than once carried the same change each time."""
    result: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    seen: dict[tuple[str, str, int], dict[str, Any]] = {}
    for mart, messages in feed.items():
        for message in messages:
            ident = (mart, message.key_text, message.version)
            if ident in seen:
                assert seen[ident] == message.value, f"{ident} published with two different changes"
                continue
            seen[ident] = message.value
            change = {k: v for k, v in message.value.items() if k != "version"}
            result[mart, message.key_text].append((message.version, repr(sorted(change.items()))))
    return result


def test_sigkill_mid_batch_and_restart(tmp_path: Path, kafka_bootstrap: str) -> None:
    a = settings_for(tmp_path / "a", kafka_bootstrap, PREFIX)
    b = a.model_copy(
        update={
            "data_dir": tmp_path / "b",
            "kafka": a.kafka.model_copy(
                update={"group_prefix": f"{PREFIX}b", "gold_topic_prefix": f"{PREFIX}b.gold"}
            ),
        }
    )
    generator = ShopGenerator(5)
    changes = list(generator.changes(3000))
    produce_changes(kafka_bootstrap, PREFIX, changes)
    for settings in (a, b):
        run_ingest_until_caught_up(settings)

    log = tmp_path / "transform-b.log"
    rng = random.Random()
    with ThreadPoolExecutor(max_workers=1) as pool:
        uninterrupted = pool.submit(run_transform_once, a, **BATCH)

        kill_at_fault(b, "before_commit", log)
        # the first batch was not committed: no trace of it
        assert count(b, "SELECT count(*) AS n FROM cdcwh.batches") == 0
        assert count(b, "SELECT count(*) AS n FROM cdcwh.outbox") == 0
        assert tables_in(b, "silver") == [] and tables_in(b, "gold") == []

        kill_at_fault(b, "before_publish", log)
        # committed with its outbox, nothing published yet
        assert query(b, "SELECT batch_id, status FROM cdcwh.batches") == [{"batch_id": 1, "status": "ok"}]
        assert count(b, "SELECT count(*) AS n FROM cdcwh.outbox") > 0

        delays = [kill_mid_run(b, log, 2, rng), kill_mid_run(b, log, 1, rng)]
        run_transform_once(b, **BATCH)
        uninterrupted.result()

    context = f"random kills {delays} s after a batch; log:\n{log.read_text()[-3000:]}"
    # batches: the same ones, each recorded once and ok
    batches = "SELECT batch_id, status, bronze_rows, gold_changes FROM cdcwh.batches ORDER BY batch_id"
    a_batches, b_batches = query(a, batches), query(b, batches)
    assert len(a_batches) >= 6  # work left for the random kills to land in
    assert b_batches == a_batches, context
    assert [r["batch_id"] for r in b_batches] == list(range(1, len(b_batches) + 1))
    for settings in (a, b):
        assert count(settings, "SELECT count(*) AS n FROM cdcwh.outbox") == 0

    # silver and its changelog: identical, no partial or doubled batch
    for table in TABLES:
        for schema in ("silver", "silver_history"):
            assert table_rows(b, f"{schema}.{table}") == table_rows(a, f"{schema}.{table}"), (schema, table)
    # gold: identical, and right
    for mart in MARTS:
        drop = ["_updated_at", "_version"]
        assert table_rows(b, f"gold.{mart}", drop) == table_rows(a, f"gold.{mart}", drop), mart
    expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
    assert compare_marts(read_marts(b), expected) == []

    # the published changes
    feed_a = read_feed(kafka_bootstrap, a.kafka.gold_topic_prefix)
    feed_b = read_feed(kafka_bootstrap, b.kafka.gold_topic_prefix)
    types = {mart: column_types(a, f"gold.{mart}") for mart in MARTS}
    replay_a, replay_b = replay(feed_a, types), replay(feed_b, types)
    assert replay_a == gold_state(a, MARTS, with_version=True)
    assert replay_b == gold_state(b, MARTS, with_version=True)
    # a version is a time, not the batch id: through each file's batches, the same rows of the same batches
    assert by_batch(b, replay_b) == by_batch(a, replay_a)
    a_changes = changes_by_key(feed_a)
    assert sum(len(v) for v in a_changes.values()) == sum(len(ms) for ms in feed_a.values()), "A: no repeats"
    b_changes = changes_by_key(feed_b)
    for key, versions in b_changes.items():
        assert [v for v, _ in versions] == sorted({v for v, _ in versions}), f"{key}: versions out of order"
    # no lost and no doubled change: per key the same sequence of changes (versions aside)
    strip = {key: [change for _, change in versions] for key, versions in b_changes.items()}
    assert strip == {key: [change for _, change in versions] for key, versions in a_changes.items()}, context
