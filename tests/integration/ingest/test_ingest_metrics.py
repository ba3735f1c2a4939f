"""The ingest service's Prometheus endpoint: counts that match what was produced, and a clear error when the
metrics port is taken. The metrics are documented in docs/metrics.md."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from cdcwh.errors import ConfigError
from cdcwh.generate.output import ensure_topics
from cdcwh.metrics import serve_metrics
from tests.support.pipeline import TABLES, cli_env, env_overrides, produce_shop, settings_for

PARTITIONS = 3  # produce_shop's
# bad values with the reason they are quarantined for (no contract applies to the test's topics); one goes to
# every partition of every topic, so that no partition is empty
BAD = [
    ("invalid_json", b'{"payload": {"op": "c", '),
    ("unknown_op", b'{"op": "z", "after": {"id": 1}}'),
    ("invalid_envelope", b"[1, 2, 3]"),
    ("invalid_json", b"\xff\xfe not utf-8"),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class Scraped:
    """The last scrape of a running ingest (taken once it showed everything, or at the deadline)."""

    samples: Samples
    missing: list[str]
    exit_code: int
    log: str
    topics: list[str]
    empty_topic: str
    group: str


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Scraped:
    """Shop records, a bad record in every partition and an empty topic, consumed by a running ingest that is
    scraped until its metrics show all of it, then stopped with SIGTERM."""
    tmp = tmp_path_factory.mktemp("metrics")
    prefix = f"met{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp / "data", kafka_bootstrap, prefix)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=300, seed=4)
    topics = [f"{prefix}.public.{t}" for t in TABLES]
    good = Counter(f"{prefix}.public.{c.table}" for c in changes for _ in range(2 if c.op == "d" else 1))
    bad: Counter[tuple[str, str]] = Counter()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, (topic, partition) in enumerate((t, p) for t in topics for p in range(PARTITIONS)):
        reason, bad_value = BAD[i % len(BAD)]
        producer.produce(topic, key=b'{"id": 1}', value=bad_value, partition=partition)
        bad[(topic, reason)] += 1
    assert producer.flush(30) == 0
    empty_topic = f"{prefix}.public.empty"
    ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [empty_topic], PARTITIONS)
    group = f"{prefix}-ingest"

    def missing(samples: Samples) -> list[str]:
        """What the scrape does not show yet (empty when it shows everything expected)."""
        now = time.time()
        out = []
        for topic in topics:
            landed = value(samples, "cdcwh_events_landed_total", topic=topic)
            if landed != good[topic]:
                out.append(f"landed {topic}: {landed} != {good[topic]}")
            quarantined = sum(n for (t, _), n in bad.items() if t == topic)
            consumed = value(samples, "cdcwh_events_consumed_total", topic=topic)
            if consumed != good[topic] + quarantined:
                out.append(f"consumed {topic}: {consumed} != {good[topic] + quarantined}")
            for partition in range(PARTITIONS):
                lag = value(samples, "cdcwh_consumer_lag", group=group, topic=topic, partition=str(partition))
                if lag != 0:
                    out.append(f"lag {topic}/{partition}: {lag}")
        for (topic, reason), count in bad.items():
            got = value(samples, "cdcwh_events_quarantined_total", topic=topic, reason=reason)
            if got != count:
                out.append(f"quarantined {topic} {reason}: {got} != {count}")
        if not value(samples, "cdcwh_bronze_commit_duration_seconds_count"):
            out.append("no bronze commit duration")
        if not value(samples, "cdcwh_freshness_seconds_count", stage="bronze"):
            out.append("no bronze freshness")
        last = value(samples, "cdcwh_last_success_timestamp_seconds", service="ingest")
        if last is None or not now - 60 < last <= now + 1:
            out.append(f"last success {last} is not within the last minute of {now}")
        return out

    port = free_port()
    log = tmp / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdcwh.cli", "ingest"],
            env=cli_env(settings, CDCWH_METRICS__PORT=str(port), CDCWH_INGEST__COMMIT_INTERVAL_S="0.5"),
            stdout=out,
            stderr=out,
        )
    samples: Samples = {}
    shown = ["nothing scraped"]
    try:
        deadline = time.monotonic() + 60
        while shown and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                samples = scrape(port)
            except OSError:
                continue  # not serving yet
            shown = missing(samples)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    return Scraped(samples, shown, code, log.read_text(), topics, empty_topic, group)


def test_metrics_count_what_was_landed_and_quarantined(scraped: Scraped) -> None:
    assert not scraped.missing, f"{scraped.missing}\n{scraped.log[-3000:]}"
    # only the labels the data allows: reasons from the closed set, no redelivery on a clean run
    reasons = {
        dict(labels)["reason"] for name, labels in scraped.samples if name == "cdcwh_events_quarantined_total"
    }
    assert reasons == {reason for reason, _ in BAD}
    topics = {
        dict(labels)["topic"] for name, labels in scraped.samples if name == "cdcwh_events_consumed_total"
    }
    assert topics == set(scraped.topics)
    assert not any(name == "cdcwh_events_skipped_total" and n for (name, _), n in scraped.samples.items())
    assert scraped.exit_code == 0, scraped.log[-3000:]


def test_consumer_lag_is_exported_for_empty_partitions(scraped: Scraped) -> None:
    assert not scraped.missing  # the non-empty partitions were reported: the statistics ran
    lags = [
        value(
            scraped.samples,
            "cdcwh_consumer_lag",
            group=scraped.group,
            topic=scraped.empty_topic,
            partition=str(p),
        )
        for p in range(PARTITIONS)
    ]
    assert lags == [0] * PARTITIONS


def test_a_taken_metrics_port_is_a_clear_configuration_error(tmp_path: Path, kafka_bootstrap: str) -> None:
    """What ``cdcwh ingest`` raises before it consumes anything (the CLI prints it and exits 2)."""
    settings = settings_for(tmp_path / "data", kafka_bootstrap, "metricsport")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as raised:
            serve_metrics(env_overrides(settings, CDCWH_METRICS__PORT=str(port)), "ingest")
    message = str(raised.value)
    assert "CDCWH_METRICS__PORT" in message
    assert str(port) in message
