"""What the sink commits, and what it gives back: offsets are stored by the sink itself, only for messages it
applied (``enable.auto.offset.store`` is off), so that nothing it consumed but did not apply is ever
committed past.

The case that needs it: while PostgreSQL is away the sink pauses its partitions and waits, serving its
consumer. A rebalance meanwhile (another member joins or leaves, a new mart's topic appears) gives it
partitions that are not paused; what it polls from them while it waits is given back (:func:`give_back`: a
seek to the message, then every partition paused again) rather than dropped, and a commit after the batch
does not go past it. Offsets of partitions the sink no longer holds are not stored: their new owner applies
the batch's changes again (versions make that harmless).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

CONSUMER_SETTINGS = {"enable.auto.offset.store": False}
"""The sink's consumer settings that this module relies on."""


def commit_applied(consumer: Consumer, messages: Sequence[Message]) -> int:
    """Store and commit the offsets after ``messages`` (applied) on the partitions still assigned; returns
    how many partitions were committed."""
    ends: dict[tuple[str, int], int] = {}
    for message in messages:
        where = (message.topic() or "", message.partition() or 0)
        ends[where] = max(ends.get(where, -1), (message.offset() or 0) + 1)
    held = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    offsets = [TopicPartition(t, p, offset) for (t, p), offset in ends.items() if (t, p) in held]
    if not offsets:
        return 0
    consumer.store_offsets(offsets=offsets)
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET):
            raise
        log.info("nothing to commit: the batch's partitions were revoked before its commit")
        return 0
    return len(offsets)


def give_back(consumer: Consumer, message: Message) -> None:
    """A message polled while the sink waits (a partition assigned during the wait is not paused): read it
    again later, and pause every partition held."""
    tp = TopicPartition(message.topic() or "", message.partition() or 0, message.offset() or 0)
    consumer.seek(tp)
    consumer.pause(consumer.assignment())
