"""Quarantine: rejected records kept with their reason and original bytes, in Iceberg and in a DLQ topic.

``bronze._quarantine`` is the system of record (exactly once, by the same landed-offsets protocol as the
bronze tables); ``<topic>.dlq`` carries the same records for Kafka-side tooling, at least once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcwh.core.record import Rejection
from cdcwh.errors import ProduceError
from cdcwh.kafka import ensure_topics

DLQ_SUFFIX = ".dlq"

QUARANTINE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("kafka_ts", pa.timestamp("us", tz="UTC")),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def quarantine_rows(rejections: Sequence[Rejection], now: datetime) -> pa.Table:
    """One Arrow row per rejection, in QUARANTINE_SCHEMA."""
    return pa.table(
        {
            "reason": [str(r.reason) for r in rejections],
            "detail": [r.detail for r in rejections],
            "topic": [r.topic for r in rejections],
            "partition": [r.partition for r in rejections],
            "offset": [r.offset for r in rejections],
            "key": [r.key for r in rejections],
            "value": [r.value for r in rejections],
            "kafka_ts": [None if r.timestamp_ms is None else r.timestamp_ms * 1000 for r in rejections],
            "quarantined_at": [now] * len(rejections),
        },
        schema=QUARANTINE_SCHEMA,
    )


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class KafkaDeadLetterPublisher:
    """Produces rejected records to ``<topic>.dlq``, the reason in headers; ``publish`` waits for delivery."""

    def __init__(self, client_config: dict[str, Any], partitions: int = 1) -> None:
        self._client_config = client_config
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all"})
        self._partitions = partitions
        self._known: set[str] = set()

    def _ensure_topics(self, topics: set[str]) -> None:
        missing = topics - self._known
        if missing:
            ensure_topics(AdminClient(self._client_config), sorted(missing), self._partitions)
            self._known |= missing

    def publish(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        self._ensure_topics({dlq_topic(r.topic) for r in rejections})
        failures: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for r in rejections:
            self._producer.produce(
                dlq_topic(r.topic),
                key=r.key,
                value=r.value,
                headers=[
                    ("cdcwh.reason", str(r.reason).encode()),
                    ("cdcwh.detail", r.detail.encode("utf-8", "replace")),
                    ("cdcwh.source.partition", str(r.partition).encode()),
                    ("cdcwh.source.offset", str(r.offset).encode()),
                ],
                on_delivery=on_delivery,
            )
            self._producer.poll(0)
        remaining = self._producer.flush(30)
        if remaining or failures:
            raise ProduceError(f"DLQ delivery failed ({remaining} undelivered): {'; '.join(failures[:3])}")
