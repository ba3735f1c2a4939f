"""Produce the engine's records to Kafka as Kafka Connect would: same topic, key and value bytes, tombstones.

``KafkaRelay.send(batch)`` returns only once every record of the batch is acknowledged by the broker (an
idempotent producer, ``acks=all``), or raises ``ProduceError``; the engine marks a batch processed, and so
lets its offsets advance, only after ``send`` returned. Records are partitioned like the Java producer does
(murmur2 of the key), so a key lands on the partition Kafka Connect would have chosen.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcwh import metrics
from cdcwh.errors import ProduceError
from cdcwh.kafka import DeliveryFailures, ensure_topics, renewed_producer

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes | None]
FLUSH_STEP_S = 5.0


class KafkaRelay:
    """One producer for the life of a capture process, or until a batch is not delivered."""

    def __init__(
        self, producer_config: dict[str, Any], admin_config: dict[str, Any], partitions: int
    ) -> None:
        self._config = {**producer_config, "partitioner": "murmur2_random"}
        self.producer = Producer(self._config)
        self.admin = AdminClient(admin_config)
        self.partitions = partitions
        self.known_topics: set[str] = set()

    def send(self, batch: Iterable[Record]) -> int:
        """Produce every record and wait for all of them; the number sent."""
        records = list(batch)
        self._ensure_topics({topic for topic, _, _ in records})
        delivered = DeliveryFailures()
        for topic, key, value in records:
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self.producer.poll(0.1)
        while self.producer.flush(FLUSH_STEP_S) > 0:
            log.warning("capture: waiting for the broker to acknowledge %d records", len(self.producer))
        if delivered:
            failures = delivered.failures
            if not delivered.delivered:  # stuck, not a refused record: a new producer
                self._renew()
            raise ProduceError(f"{len(failures)} records not delivered, first: {failures[0]}")
        for topic, count in Counter(topic for topic, _, _ in records).items():
            metrics.CAPTURE_EVENTS.labels(topic).inc(count)
        return len(records)

    def _ensure_topics(self, topics: set[str]) -> None:
        new = topics - self.known_topics
        if new:
            ensure_topics(self.admin, sorted(new), self.partitions)
            self.known_topics |= new

    def _renew(self) -> None:
        """A new producer (``renewed_producer``), and the topics checked again, after a batch of which
        nothing was delivered (the engine sends it again)."""
        self.producer = renewed_producer(self.producer, self._config)
        self.known_topics.clear()

    def close(self) -> None:
        self.producer.flush(10)
