"""Read Kafka topics back to their end, for tests.

The end is found through partition EOF, not ListOffsets: the embedded broker (Tansu) answers ListOffsets
"latest" with a stale offset.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition


def read_to_end(
    bootstrap: str, *, topics: list[str] | None = None, prefix: str | None = None, timeout_s: float = 60.0
) -> list[Message]:
    """Every record of ``topics`` (or of every topic starting with ``prefix``), from the beginning to EOF."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"readback-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics
        names = (
            topics if topics is not None else sorted(t for t in metadata if prefix and t.startswith(prefix))
        )
        missing = [t for t in names if t not in metadata]
        assert not missing, f"topics {missing} do not exist"
        assignment = [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in metadata[t].partitions]
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"partitions {sorted(pending)} not read to the end"
            for message in consumer.consume(5000, timeout=1.0):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                else:
                    raise AssertionError(f"{message.topic()}: {error}")
        return messages
    finally:
        consumer.close()
