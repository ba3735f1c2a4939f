"""Faults under the long-running sink: PostgreSQL stopped mid-run and restarted, the sink killed with SIGKILL
and started again (the sink is a ``cdcwh sink`` subprocess; ingest and transform run in-process). Every mart
in Postgres ends equal to gold in DuckDB (``_version`` included) and to the independent reference: nothing
lost, nothing doubled.

The test owns its embedded Postgres (not the session one) so that it can stop and restart it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, TopicPartition

from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedPostgres
from cdcwh.embedded.postgres import postgres_answers
from cdcwh.generate import ShopGenerator, SourceChange
from tests.support.marts import differences, gold_marts, pg_marts, read_topics
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import (
    cli_env,
    run_ingest_until_caught_up,
    run_sink_until_caught_up,
    settings_for,
)
from tests.support.warehouse import MARTS, produce_changes, run_transform_once

SCHEMA = "marts_fault"

RETRY = "applying a sink batch to PostgreSQL failed"  # the retry helper's log line


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, log: Path, interval_s: float = 0.3
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(interval_s)


def text(log: Path) -> str:
    """The log with rich's line wrapping undone."""
    return " ".join(log.read_text().split())


def gold_topics(settings: Settings) -> list[str]:
    return [f"{settings.kafka.gold_topic_prefix}.{mart}" for mart in MARTS]


def gold_message_count(settings: Settings) -> int:
    return len(read_topics(str(settings.kafka.bootstrap_servers), gold_topics(settings)))


def committed_total(settings: Settings) -> int:
    """Sum of the sink group's committed offsets over every gold partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"{settings.kafka.group_prefix}-sink",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in gold_topics(settings)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        committed = consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def produce_round(settings: Settings, prefix: str, changes: list[SourceChange]) -> None:
    """Source changes through to gold: produce, ingest, transform (in-process)."""
    produce_changes(str(settings.kafka.bootstrap_servers), prefix, changes)
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)


def applied_batches(log: Path) -> int:
    return len(re.findall(r"applied \d+ gold changes", text(log)))


def test_postgres_restart_and_sink_kill_converge(
    tmp_path: Path, kafka_bootstrap: str, unique_prefix: str
) -> None:
    prefix = unique_prefix
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    postgres = EmbeddedPostgres(tmp_path / "pg", tmp_path / "pg" / "run")
    postgres.start()
    dsn = postgres.dsn
    env = {"CDCWH_POSTGRES__DSN": dsn, "CDCWH_POSTGRES__SCHEMA": SCHEMA}
    # small batches, so that the SIGKILL lands between the batches of a backlog
    sink_env = cli_env(settings, CDCWH_SINK__BATCH_MAX_ROWS="50", **env)
    generator = ShopGenerator(13)
    changes = list(generator.changes(2400))
    rounds = [changes[:800], changes[800:1600], changes[1600:]]
    log = tmp_path / "sink.log"
    sinks: list[subprocess.Popen[bytes]] = []

    def start_sink() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cdcwh.cli", "sink"], env=sink_env, stdout=out, stderr=out
            )
        sinks.append(process)
        return process

    def converged() -> bool:
        try:
            return differences(pg_marts(dsn, SCHEMA), gold_marts(settings)) == []
        except psycopg.Error:  # down, or the sink has not created the marts yet
            return False

    try:
        # round 1: the running sink loads the first gold changes
        produce_round(settings, prefix, rounds[0])
        sink = start_sink()
        wait_for(converged, 60, "the first round in Postgres", log)
        round_one = gold_message_count(settings)

        # round 2 while Postgres is down: the sink retries the batch, keeps running, commits nothing
        postgres.stop()
        assert not postgres_answers(dsn)
        produce_round(settings, prefix, rounds[1])
        wait_for(lambda: RETRY in text(log), 30, "the sink to retry", log)
        time.sleep(1.0)  # a few more retries
        assert sink.poll() is None, log.read_text()[-3000:]
        assert committed_total(settings) == round_one
        assert gold_message_count(settings) > round_one
        batches = applied_batches(log)
        postgres.start()
        assert postgres.dsn == dsn  # the same Unix socket: the running sink reconnects to it

        # the sink goes on by itself once Postgres is back; SIGKILL it as soon as it has applied a batch
        # (most of the backlog is then still to apply), and start it again
        wait_for(lambda: applied_batches(log) > batches, 60, "a batch applied after the restart", log, 0.05)
        assert sink.poll() is None, "the sink stopped while Postgres was down:\n" + log.read_text()[-3000:]
        sink.send_signal(signal.SIGKILL)
        assert sink.wait(timeout=10) == -signal.SIGKILL
        retries = re.findall(re.escape(RETRY) + r" \(.*?\); retrying in", text(log))
        assert len(retries) >= 2, log.read_text()[-3000:]
        sink = start_sink()

        # round 3 while the restarted sink runs
        produce_round(settings, prefix, rounds[2])
        wait_for(converged, 60, "every round in Postgres", log)
        assert committed_total(settings) > round_one
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, log.read_text()[-3000:]

        run_sink_until_caught_up(settings, **env)
        actual = pg_marts(dsn, SCHEMA)
        assert all(actual[mart] for mart in MARTS)
        assert differences(actual, gold_marts(settings)) == []
        expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
        assert compare_marts(actual, expected) == []
        assert committed_total(settings) == gold_message_count(settings)
    finally:
        for process in sinks:
            if process.poll() is None:
                process.kill()
                process.wait()
        postgres.stop()
