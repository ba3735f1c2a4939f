"""Chaos: ``cdcwh run`` under a steady workload while ingest, transform and sink are SIGKILLed at random
moments and the embedded broker is restarted once; every Postgres mart then equals the independent reference.

The broker is restarted (memory-only: every topic, offset and consumer group is gone) after the first half of
the workload has reached Postgres, and the second half is produced to the new, empty log; ingest must detect
the new incarnation of each partition and land it rather than skip it as already landed.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from cdcwh.embedded import EmbeddedBroker
from cdcwh.generate import ShopGenerator, encode, produce
from cdcwh.generate.state import replay_state
from tests.support.marts import read_postgres_marts
from tests.support.marts_reference import compare_marts, customer_changes_from, reference_marts
from tests.support.pipeline import cli_env, settings_for

pytestmark = pytest.mark.chaos

SERVICES = ("ingest", "transform", "sink")
EVENTS = 2400
RATE = 400.0  # change events per second: a steady trickle, not a bulk load
SETTLE_S = 120.0


def children(run: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    """The supervised services by name."""
    found = {}
    for child in psutil.Process(run.pid).children():
        try:
            args = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        for name in SERVICES:
            if args[-1:] == [name]:
                found[name] = child
    return found


class Killer(threading.Thread):
    """SIGKILLs a service every 2.5-5 s until stopped: the services in a random order per round, so that every
    one of them is killed, at random moments of its work."""

    def __init__(self, run: subprocess.Popen[bytes], rng: random.Random) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.run_process = run
        self.rng = rng
        self.kills: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        due: list[str] = []
        while not self.stopping.wait(self.rng.uniform(2.5, 5.0)):
            if not due:
                due = self.rng.sample(SERVICES, len(SERVICES))
            alive = children(self.run_process)
            if due[0] not in alive:
                continue  # being restarted: its turn waits
            name = due.pop(0)
            try:
                alive[name].send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
            self.kills.append(name)


def wait_for_marts(dsn: str, schema: str, expected: dict[str, list[dict[str, object]]]) -> list[str]:
    """Poll Postgres until its marts equal ``expected``; the differences left at the deadline."""
    deadline = time.monotonic() + SETTLE_S
    differences = ["not compared yet"]
    while time.monotonic() < deadline:
        try:
            differences = compare_marts(read_postgres_marts(dsn, schema), expected)
        except Exception as exc:  # marts not created yet
            differences = [f"{type(exc).__name__}: {exc}"]
        if not differences:
            return []
        time.sleep(1.0)
    return differences[:10]


def test_random_kills_and_a_broker_restart_lose_and_duplicate_nothing(
    tmp_path: Path, postgres_dsn: str
) -> None:
    rng = random.Random(7)
    prefix, schema = "chaos", "marts_chaos"
    generator = ShopGenerator(11)
    changes = list(generator.changes(EVENTS))
    half = len(changes) // 2
    broker = EmbeddedBroker(tmp_path / "b" / "run", tmp_path / "b" / "logs")
    broker.start()
    port = int(broker.address.rsplit(":", 1)[1])
    settings = settings_for(tmp_path / "data", broker.address, prefix)
    env = cli_env(
        settings,
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=schema,
        CDCWH_TRANSFORM__INTERVAL_S="0.5",
        CDCWH_INGEST__TOPIC_REFRESH_S="2",
    )
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "cdcwh.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    killer = Killer(run, rng)
    try:
        killer.start()
        config = {"bootstrap.servers": broker.address}
        produce(
            [r for c in changes[:half] for r in encode(c, prefix=prefix)],
            producer_config=config,
            partitions=3,
            rate=RATE,
        )
        first = replay_state(changes[:half])
        assert (
            wait_for_marts(
                postgres_dsn, schema, reference_marts(first, customer_changes_from(changes[:half]))
            )
            == []
        )

        broker.stop()  # memory-only: every topic, offset and group is gone
        broker = EmbeddedBroker(tmp_path / "b" / "run", tmp_path / "b" / "logs", port=port)
        broker.start()
        produce(
            [r for c in changes[half:] for r in encode(c, prefix=prefix)],
            producer_config=config,
            partitions=3,
            rate=RATE,
        )
        while len(killer.kills) < 10:
            time.sleep(0.5)
        killer.stopping.set()
        killer.join()
        expected = reference_marts(generator.expected_state(), customer_changes_from(changes))
        assert wait_for_marts(postgres_dsn, schema, expected) == []
        assert len(killer.kills) >= 10 and set(killer.kills) == set(SERVICES)
    finally:
        killer.stopping.set()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
        broker.stop()
        log.close()
    ingest_log = (tmp_path / "data" / "logs" / "ingest.log").read_text(errors="replace")
    assert "new incarnation" in ingest_log
