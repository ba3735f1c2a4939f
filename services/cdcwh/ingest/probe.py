"""``KafkaRecordProbe``: reads the one record at an offset, for the log-incarnation check (bronze/)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from cdcwh.bronze.incarnation import fingerprint
from cdcwh.errors import TransientError

PROBE_TIMEOUT_S = 15.0


class KafkaRecordProbe:
    """A group-less consumer that reads one partition at a time.

    The log's end is taken from a fetch response's high watermark (a fetch from the log's start), not from
    ListOffsets, which some Kafka-compatible brokers answer with a stale value (the embedded Tansu); a fetch
    past the end is not answered "out of range" by every broker either, so the end is known before the
    record is asked for."""

    def __init__(self, config: dict[str, Any], timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.config = {
            **{k: v for k, v in config.items() if k not in {"group.id", "enable.auto.commit"}},
            "group.id": "cdcwh-probe",  # required by librdkafka, unused: nothing is subscribed or committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def fetch(self, topic: str, partition: int, offset: int) -> tuple[int, str] | None:
        end = self._end(topic, partition)
        if end <= offset:
            return None
        message = self._first(topic, partition, offset)
        if message is None:  # the end moved back meanwhile: a reset happening now
            return None
        _, timestamp = message.timestamp()
        return int(message.offset()), fingerprint(message.key(), message.value(), timestamp)

    def _end(self, topic: str, partition: int) -> int:
        """The partition's end (high watermark, or last stable offset) as a fetch response reports it."""
        self._first(topic, partition, OFFSET_BEGINNING)
        consumer = self._open()
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        if high < 0:
            raise TransientError(f"no high watermark for {topic}/{partition} from a fetch")
        return int(high)

    def _first(self, topic: str, partition: int, offset: int) -> Any:
        """The first record at or after ``offset``; None at the partition's end."""
        consumer = self._open()
        consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    return message
                if error.code() == KafkaError._PARTITION_EOF:
                    return None
                if not (error.retriable() or error.code() == KafkaError._TRANSPORT):
                    raise TransientError(f"reading {topic}/{partition} at offset {offset}: {error}")
        finally:
            consumer.unassign()
        raise TransientError(
            f"no answer reading {topic}/{partition} at offset {offset} within {self.timeout_s:.0f}s"
        )

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.config)
        return self._consumer

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None  # a failed close still leaves room for a new one
        if consumer is not None:
            consumer.close()
