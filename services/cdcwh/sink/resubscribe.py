"""Subscribing the sink again when its gold topics vanished and came back while it holds no partition.

After the embedded broker restarts (memory-only: every topic and group gone) the sink's consumer reports its
topics unknown, and once the transform has created them again it can stay without partitions (seen for
minutes, in about half the tries, with librdkafka 2.12; ``unsubscribe`` and ``subscribe`` rejoin at once).
The chaos test saw a sink wait out its two minutes so. Only after the topics were reported gone, and at most
``ATTEMPTS`` times (each costs the group a rebalance), so that a member of a larger group that is
legitimately without partitions is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from confluent_kafka import KafkaException

log = logging.getLogger(__name__)

# Seconds after the topics were reported gone, and after each subscribing again, before the next check:
# longer than a session timeout plus a group join on the embedded broker (6 s and about 3 s at the
# defaults), so that a join under way is not cut short
CHECK_S: Final = 10.0
ATTEMPTS: Final = 3


class GroupConsumer(Protocol):
    def assignment(self) -> list[object]: ...
    def unsubscribe(self) -> None: ...
    def subscribe(self, topics: list[str], **callbacks: Callable[..., Any]) -> None: ...


class Resubscriber:
    """Call ``vanished()`` when the consumer reports a subscribed topic unknown, and ``check`` after every
    poll; ``check`` subscribes again (returning True) when it is time and the topics are back."""

    def __init__(
        self,
        callbacks: Mapping[str, Callable[..., Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callbacks = dict(callbacks or {})
        """``subscribe``'s rebalance callbacks (the sink's :class:`cdcwh.sink.offsets.Pauses`)."""
        self.clock = clock
        self.since: float | None = None  # when the topics were reported gone, or last subscribed again
        self.attempts = 0

    def vanished(self) -> None:
        if self.since is None:
            self.since, self.attempts = self.clock(), 0

    def check(
        self,
        consumer: GroupConsumer,
        topics_on_broker: Callable[[], Mapping[str, int]],
        pattern: str,
    ) -> bool:
        if self.since is None or self.clock() - self.since < CHECK_S:
            return False
        if consumer.assignment():
            self.since = None  # assigned again by itself
            return False
        self.since = self.clock()  # look again later, until partitions are assigned
        try:
            if not topics_on_broker():
                return False  # still gone
        except KafkaException:
            return False  # the broker does not answer (yet): still gone
        if self.attempts == ATTEMPTS:
            self.since = None  # another member of the group may hold every partition: leave it be
            return False
        self.attempts += 1
        log.warning(
            "the gold topics (%s) are back after they vanished (a broker reset?) and this sink has no "
            "partition: subscribing again",
            pattern,
        )
        consumer.unsubscribe()
        consumer.subscribe([pattern], **self.callbacks)
        return True
