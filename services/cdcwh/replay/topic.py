"""Re-read a source topic from an offset or a timestamp into bronze.

Uses its own consumer with no group (nothing is committed, the ingest service's group is untouched) and the
same ``IcebergBronzeWriter`` as ingest, whose landed-offset check drops what bronze already has: replaying is
safe while ingest runs, and lands only what is missing (for example after bronze was restored from backup).
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from cdcwh.config import Settings
from cdcwh.core.record import RawRecord
from cdcwh.errors import ConfigError
from cdcwh.ingest.service import make_writer
from cdcwh.kafka import client_config

BATCH = 20_000


def replay_topic(
    settings: Settings,
    topic: str,
    *,
    from_offset: int | None = None,
    from_timestamp_ms: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict[str, int]:
    """Returns records read, landed, skipped (already in bronze) and quarantined."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": "cdcwh-replay",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise ConfigError(f"topic {topic} does not exist")
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        if from_timestamp_ms is not None:
            for tp in partitions:
                tp.offset = from_timestamp_ms
            partitions = consumer.offsets_for_times(partitions, timeout=10)
        else:
            for tp in partitions:
                tp.offset = from_offset if from_offset is not None else OFFSET_BEGINNING
        consumer.assign(partitions)
        writer = make_writer(settings)
        pending = {tp.partition for tp in partitions}
        totals = {"read": 0, "landed": 0, "skipped": 0, "quarantined": 0}
        while pending:
            records: list[RawRecord] = []
            while pending and len(records) < BATCH:
                messages = consumer.consume(BATCH - len(records), timeout=1.0)
                if not messages:
                    continue
                for m in messages:
                    error = m.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(m.partition())
                        continue
                    records.append(
                        RawRecord(topic, m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value())
                    )
            if not records:
                continue
            result = writer.land(records)
            totals["read"] += len(records)
            totals["landed"] += sum(result.landed.values())
            totals["skipped"] += sum(result.skipped.values())
            totals["quarantined"] += len(result.quarantined)
            if progress is not None:
                progress(len(records), sum(result.landed.values()), sum(result.skipped.values()))
        return totals
    finally:
        consumer.close()
