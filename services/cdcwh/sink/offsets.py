"""What the sink commits, and how it pauses while PostgreSQL is away.

Offsets are stored by the sink itself, only for messages it applied (``enable.auto.offset.store`` is off),
so that nothing it consumed but did not apply is ever committed past. Offsets of partitions the sink no
longer holds are not stored: their new owner applies the batch's changes again (versions make that
harmless).

While PostgreSQL is away the sink pauses its partitions and waits, serving its consumer. A rebalance
meanwhile (another member joins or leaves, a new model's topic appears) must neither feed it nor leave
anything paused for good (:class:`Pauses`): a partition assigned while it waits is paused at once, and one
revoked is resumed first, because librdkafka keeps an application's pause on a partition it loses and gets
back later, which would stop that partition for good. A message polled while waiting all the same is given
back (:func:`give_back`: a seek to it, then every partition paused again) rather than dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

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
        if not (isinstance(error, KafkaError) and error.code() in _NOT_COMMITTED):
            raise
        # the batch is applied; its offsets are committed with a later batch, or its changes are applied
        # again by whoever reads the partition next (versions make that harmless)
        log.warning("the batch's offsets were not committed (%s): a rebalance under way", error.str())
        return 0
    return len(offsets)


_NOT_COMMITTED = frozenset(
    {
        KafkaError._NO_OFFSET,  # already committed, or nothing stored any more
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
    }
)


def give_back(consumer: Consumer, message: Message) -> None:
    """A message polled while the sink waits: read it again later, and pause every partition held. Never
    raises (the wait goes on; the message is read again at the latest after a restart)."""
    tp = TopicPartition(message.topic() or "", message.partition() or 0, message.offset() or 0)
    try:
        consumer.seek(tp)
        consumer.pause(consumer.assignment())
    except KafkaException as exc:
        log.warning("could not give back a message polled while waiting (%s): %s", tp, exc)
        return
    log.info("gave back a message polled while waiting for PostgreSQL (%s offset %d)", tp.topic, tp.offset)


class Pauses:
    """The sink's pause while PostgreSQL is away, kept right across rebalances (the module's docstring)."""

    def __init__(self) -> None:
        self.waiting = False

    def pause(self, consumer: Consumer) -> None:
        self.waiting = True
        consumer.pause(consumer.assignment())

    def resume(self, consumer: Consumer) -> None:
        self.waiting = False
        consumer.resume(consumer.assignment())

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.waiting:
            consumer.assign(partitions)
            consumer.pause(partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with suppress(KafkaException):
            consumer.resume(partitions)

    def callbacks(self) -> dict[str, Callable[..., Any]]:
        """``subscribe``'s keyword arguments."""
        return {"on_assign": self.on_assign, "on_revoke": self.on_revoke}
