"""The gold change feed: outbox rows in DuckDB, published to ``cdcwh.gold.<mart>`` after the batch commits
(the prefix is ``CDCWH_KAFKA__GOLD_TOPIC_PREFIX``).

The outbox rows are written in the same DuckDB transaction as the silver and gold changes. Publishing reads
them in id order, produces them (idempotent producer, per-key order: the key is the mart's primary key), waits
for every delivery, and only then deletes them. A crash before the delete publishes them again on the next
start: at least once, and harmless, because a change is identified by (mart, key, version) and the sink
applies a version only if it is newer than the row's.

The message format (topic names, key, value) is ``cdcwh.goldfeed``'s, shared with the sink.
"""

from __future__ import annotations

from typing import Any

import duckdb
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcwh import goldfeed
from cdcwh.errors import ProduceError
from cdcwh.kafka import DeliveryFailures, ensure_topics, renewed_producer, with_producer_defaults

PUBLISH_CHUNK = 20_000
FLUSH_TIMEOUT_S = 60.0
"""How long a chunk's deliveries may take before the try fails (and is retried with a new producer)."""


class KafkaOutboxPublisher:
    """Publishes pending outbox rows; one instance per transform process."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic_prefix: str,
        partitions: int = 3,
        *,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        self._client_config = client_config
        self._topic_prefix = topic_prefix
        self._flush_timeout_s = flush_timeout_s
        self._producer = Producer(with_producer_defaults(client_config))
        self._partitions = partitions
        self._known: set[str] = set()

    def topic(self, mart: str) -> str:
        return goldfeed.gold_topic(self._topic_prefix, mart)

    def ensure_topics(self, marts: set[str]) -> None:
        """Create the change topics of ``marts`` unless this publisher already did."""
        missing = {self.topic(m) for m in marts} - self._known
        if missing:
            ensure_topics(AdminClient(self._client_config), sorted(missing), self._partitions)
            self._known |= missing

    def publish(self, con: duckdb.DuckDBPyConnection) -> int:
        """Publish every pending outbox row; returns how many were published."""
        published = 0
        while True:
            rows = con.execute(
                """SELECT id, version, mart, key, op, "row", epoch_ms(source_ts) FROM cdcwh.outbox
                ORDER BY id LIMIT ?""",
                [PUBLISH_CHUNK],
            ).fetchall()
            if not rows:
                return published
            self.ensure_topics({row[2] for row in rows})
            failures = DeliveryFailures()
            for i, (_id, version, mart, key, op, row, source_ts_ms) in enumerate(rows):
                value = goldfeed.encode(
                    mart=mart,
                    op=op,
                    version=version,
                    source_ts_ms=None if source_ts_ms is None else int(source_ts_ms),
                    key=key,
                    row=row,
                )
                self._producer.produce(self.topic(mart), key=key.encode(), value=value, on_delivery=failures)
                if i % 1000 == 999:
                    self._producer.poll(0)  # serve delivery reports now and then; flush waits for the rest
            remaining = self._producer.flush(self._flush_timeout_s)
            if remaining or failures:
                error = ProduceError(
                    f"gold change delivery failed ({remaining} undelivered): {failures.failures[:3]}"
                )
                # a broker that lost its topics (a restarted memory-only one, a new cluster) answers every
                # record with "unknown topic" until they exist again: check them on the next try
                self._known.clear()
                if not failures.delivered:  # stuck, not slow: a slow broker keeps its producer (order)
                    self._replace_producer()
                raise error
            con.execute("DELETE FROM cdcwh.outbox WHERE id <= ?", [rows[-1][0]])
            published += len(rows)

    def _replace_producer(self) -> None:
        """A new producer after a try of which nothing was delivered (``renewed_producer``); the chunk's rows
        are produced again on the next try (they leave the outbox only once all are delivered)."""
        self._producer = renewed_producer(self._producer, with_producer_defaults(self._client_config))
