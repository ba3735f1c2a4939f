"""``cdcwh demo``: the local default end to end on embedded services.

Until the rest of the pipeline lands this runs what exists: it starts the embedded broker (unless
``CDCWH_KAFKA__BOOTSTRAP_SERVERS`` is set), produces the shop workload, reads every topic back and prints a
summary per topic.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, TopicPartition
from rich.console import Console
from rich.table import Table

from cdcwh.commands import generate
from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedBroker, uses_embedded_broker
from cdcwh.kafka import client_config

console = Console()


@contextlib.contextmanager
def embedded_broker_if_needed(settings: Settings) -> Iterator[None]:
    if not uses_embedded_broker(settings):
        yield
        return
    broker = EmbeddedBroker(settings.run_dir, settings.data_dir / "logs")
    record = broker.start()
    console.print(f"embedded broker on {record.address}")
    try:
        yield
    finally:
        broker.stop()


def topic_summary(settings: Settings, prefix: str = "shop.") -> dict[str, tuple[int, int]]:
    """(records, tombstones) per topic, read back to the end of every partition."""
    config = {**client_config(settings), "group.id": "cdcwh-demo-readback", "enable.partition.eof": True}
    consumer = Consumer(config)
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(name, p, 0)
            for name, topic in metadata.topics.items()
            if name.startswith(prefix)
            for p in topic.partitions
        ]
        consumer.assign(partitions)
        remaining = {(tp.topic, tp.partition) for tp in partitions}
        counts: dict[str, tuple[int, int]] = {}
        while remaining:
            for message in consumer.consume(10_000, timeout=5.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((message.topic(), message.partition()))
                    continue
                total, tombstones = counts.get(message.topic(), (0, 0))
                counts[message.topic()] = (total + 1, tombstones + (message.value() is None))
        return counts
    finally:
        consumer.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    with embedded_broker_if_needed(settings):
        gen_args = argparse.Namespace(
            events=args.events,
            rate=args.rate,
            seed=args.seed,
            partitions=3,
            schemaless=False,
            topic_prefix="shop",
            output=None,
            expected_state=None,
            simulated_time=False,
        )
        generate.run(gen_args, settings)
        counts = topic_summary(settings)
        table = Table(title="what the broker holds now")
        table.add_column("topic")
        table.add_column("records", justify="right")
        table.add_column("tombstones", justify="right")
        for topic, (total, tombstones) in sorted(counts.items()):
            table.add_row(topic, str(total), str(tombstones))
        console.print(table)
        console.print(
            "ingest, transform and sink are not part of this version yet; see docs/ for the roadmap."
        )
    return 0
