"""Where encoded records go: a JSON-lines file, or a Kafka cluster (an adapter: the only Kafka I/O here).

JSON-lines format, one record per line (UTF-8)::

    {"topic":"shop.public.orders","key":"<key JSON text>","value":"<value JSON text>"}
    {"topic":"shop.public.orders","key":"<key JSON text>","value":null}        <- a tombstone

``key`` and ``value`` are the exact Kafka record bytes decoded as UTF-8 text (JSON inside a JSON string), so a
file can be replayed to a broker byte for byte (``read_jsonl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from cdcwh.errors import ProduceError
from cdcwh.generate.debezium import KafkaRecord
from cdcwh.kafka import ensure_topics

FLUSH_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 0.1


def write_jsonl(records: Iterable[KafkaRecord], path: Path) -> int:
    """Write ``records`` to ``path`` (created or truncated); returns the number of records written."""
    written = 0
    with path.open("wb") as out:
        for record in records:
            value = None if record.value is None else record.value.decode()
            out.write(orjson.dumps({"topic": record.topic, "key": record.key.decode(), "value": value}))
            out.write(b"\n")
            written += 1
    return written


def read_jsonl(path: Path) -> Iterator[KafkaRecord]:
    """The records of a file written by ``write_jsonl``, in order (blank lines are skipped)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                value = item["value"]
                yield KafkaRecord(
                    item["topic"], item["key"].encode(), None if value is None else value.encode()
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: not a generator record: {exc}") from exc


class Pacer:
    """Token-bucket pacing at ``rate`` tokens per second.

    Sleeps only in slices of at least ``slice_s`` (``producer.poll`` has millisecond resolution), so at high
    rates tokens are taken in small bursts; at most ``burst_s`` of unused credit is banked after a stall.
    """

    def __init__(self, rate: float, *, slice_s: float = 0.005, burst_s: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.interval = 1.0 / rate
        self.slice_s = slice_s
        self.burst_s = burst_s
        self.next_at = time.monotonic()

    def take(self, sleep: Callable[[float], object]) -> None:
        """Take one token, first waiting via ``sleep`` (e.g. ``producer.poll``) when far enough ahead."""
        now = time.monotonic()
        self.next_at = max(self.next_at, now - self.burst_s)
        if self.next_at - now >= self.slice_s:
            while (delay := self.next_at - time.monotonic()) > 0.001:
                sleep(delay)
        self.next_at += self.interval


def produce(
    records: Iterable[KafkaRecord],
    *,
    producer_config: dict[str, Any],
    partitions: int,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce ``records`` in order; returns how many were produced (tombstones included).

    Topics are created on first use with ``partitions`` partitions. The producer is idempotent with
    ``acks=all`` and the Java-compatible ``murmur2_random`` partitioner, so records with the same key land in
    the same partition as Kafka Connect would put them, in order. ``rate`` caps change events per second
    (tombstones ride along with their delete); pacing sleeps in ``producer.poll``, which also serves delivery
    callbacks. The first failed delivery raises ``ProduceError``; so does a flush that does not finish.
    """
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    config = {
        # batch up to 50 ms of changes per produce request, as a busy Kafka Connect worker does: the embedded
        # broker's CPU goes per request (measured: docs/benchmarks.md, "What limits each figure")
        "linger.ms": 50,
        **producer_config,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
    }
    producer = Producer(config)
    admin = AdminClient(dict(producer_config))
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Any) -> None:
        if error is not None and not failures:
            failures.append(f"delivery to {message.topic()} [{message.partition()}] failed: {error.str()}")

    def check() -> None:
        if failures:
            raise ProduceError(failures[0])

    pacer = Pacer(rate) if rate is not None else None
    known: set[str] = set()
    produced = 0
    last_progress = time.monotonic()
    for record in records:
        if record.topic not in known:
            ensure_topics(admin, [record.topic], partitions)
            known.add(record.topic)
        if pacer is not None and record.value is not None:
            pacer.take(producer.poll)
        while True:
            try:
                producer.produce(record.topic, key=record.key, value=record.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: wait for deliveries
                check()
        produced += 1
        producer.poll(0)
        check()
        if on_progress is not None and time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
            on_progress(produced)
            last_progress = time.monotonic()
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    check()
    if remaining:
        raise ProduceError(
            f"{remaining} of {produced} records were not delivered within {FLUSH_TIMEOUT_S:.0f} s"
        )
    if on_progress is not None:
        on_progress(produced)
    return produced
