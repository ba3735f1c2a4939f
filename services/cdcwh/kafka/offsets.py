"""End and committed offsets of topic-partitions: what ``cdcwh status`` reports, and whether a catch-up run
has anything to consume.

The end of a partition is taken from the high watermark a fetch response carries (the last stable offset
under read_committed), not from ListOffsets: the embedded broker (Tansu) answers ListOffsets "latest" with
a stale value after batched produce (status once showed end 334 while offsets up to 420 were readable).
cdcwh.ingest.probe and cdcwh.kafka.catchup take the end the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from cdcwh.errors import InfrastructureError

Partition = tuple[str, int]
END_TIMEOUT_S = 15.0


def topic_partitions(config: dict[str, Any], timeout_s: float = 10.0) -> dict[str, int]:
    """Every topic on the broker with its partition count; InfrastructureError when the broker does not
    answer."""
    consumer = Consumer({**config, "group.id": "cdcwh-status"})
    try:
        metadata = consumer.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise InfrastructureError(f"the Kafka broker does not answer: {exc}") from exc
    finally:
        consumer.close()
    return {name: len(topic.partitions) for name, topic in metadata.items()}


def end_offsets(
    config: dict[str, Any], partitions: Iterable[Partition], timeout_s: float = END_TIMEOUT_S
) -> dict[Partition, int]:
    """The end (next offset to be written) of each partition, from fetches: every partition is read from
    its start until it yields a record or reports its end, then its cached high watermark is the one of a
    fetch response. A partition that gives neither within ``timeout_s`` is left out."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    consumer = Consumer(
        {
            **{k: v for k, v in config.items() if k not in {"group.id", "enable.auto.commit"}},
            "group.id": "cdcwh-status",  # required by librdkafka; nothing is subscribed or committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 1 << 20,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted])
        answered: set[Partition] = set()
        deadline = time.monotonic() + timeout_s
        while len(answered) < len(wanted) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                continue  # retriable fetch errors: the deadline bounds them
            tp = (message.topic(), message.partition())
            if tp not in answered:
                answered.add(tp)
                consumer.pause([TopicPartition(*tp)])  # its high watermark is known: fetch no more of it
        ends = {}
        for topic, partition in sorted(answered):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high >= 0:
                ends[(topic, partition)] = int(high)
        return ends
    finally:
        consumer.close()


def committed_offsets(
    config: dict[str, Any], group: str, partitions: Iterable[Partition], timeout_s: float = 10.0
) -> dict[Partition, int]:
    """The consumer group's committed offset (the next offset it will read) per partition; absent where it
    has none."""
    wanted = [TopicPartition(t, p) for t, p in sorted(set(partitions))]
    if not wanted:
        return {}
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed(wanted, timeout=timeout_s)
    except KafkaException as exc:
        raise InfrastructureError(f"the committed offsets of group {group}: {exc}") from exc
    finally:
        consumer.close()
    return {
        (tp.topic, tp.partition): int(tp.offset) for tp in committed if tp.error is None and tp.offset >= 0
    }


def consumed_to_end(config: dict[str, Any], group: str, topics: Mapping[str, int]) -> bool:
    """Whether ``group`` has committed every partition of ``topics`` (name -> partition count) to its end, an
    empty partition counting as consumed: a ``--until-caught-up`` run would then join its group (seconds on
    any broker) only to find nothing. False whenever it cannot tell (an end not answered, a broker error):
    the run then simply joins."""
    wanted = {(topic, p) for topic, count in topics.items() for p in range(count)}
    try:
        ends = end_offsets(config, wanted)
        if set(ends) != wanted:
            return False
        committed = committed_offsets(config, group, wanted)
    except (InfrastructureError, KafkaException):
        return False
    return all(committed.get(tp, 0 if end == 0 else -1) == end for tp, end in ends.items())
