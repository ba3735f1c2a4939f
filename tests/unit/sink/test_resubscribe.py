"""When the sink subscribes again (cdcwh.sink.resubscribe): only after its topics were reported gone, only
when they are back and it holds no partition, CHECK_S apart, at most ATTEMPTS times per episode.

The consumer here is a **stand-in** recording its calls. The state it stands for (a librdkafka consumer that
stays without partitions after a memory-only broker restarts under it) is real but not reproducible on
demand: a real-broker test of it recovered without help in about half the tries, and librdkafka 2.12.1
crashed the test process (SIGSEGV in its metadata cache, confluentinc/librdkafka#5280) in about one try in
four. The whole path, a broker restarted under running services, is tests/e2e/test_chaos.py's, where the
supervisor restarts a crashed service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from cdcwh.sink.resubscribe import ATTEMPTS, CHECK_S, Resubscriber

PATTERN = r"^p\.gold\..+"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class StandInConsumer:
    def __init__(self) -> None:
        self.assigned: list[object] = []
        self.calls: list[str] = []

    def assignment(self) -> list[object]:
        return self.assigned

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.calls.append(f"subscribe {topics} {sorted(callbacks)}")  # the sink's rebalance callbacks too


BACK: Mapping[str, int] = {"p.gold.orders": 3}


def test_nothing_happens_before_the_topics_were_reported_gone() -> None:
    clock, consumer = Clock(), StandInConsumer()
    resubscriber = Resubscriber(clock=clock)
    clock.now += 10 * CHECK_S
    assert not resubscriber.check(consumer, lambda: BACK, PATTERN)
    assert consumer.calls == []


def test_back_without_a_partition_subscribes_again_check_s_after_the_report() -> None:
    clock, consumer = Clock(), StandInConsumer()
    resubscriber = Resubscriber({"on_assign": print, "on_revoke": print}, clock=clock)
    resubscriber.vanished()
    clock.now += CHECK_S - 0.1
    assert not resubscriber.check(consumer, lambda: BACK, PATTERN)
    clock.now += 0.1
    assert resubscriber.check(consumer, lambda: BACK, PATTERN)
    assert consumer.calls == ["unsubscribe", f"subscribe {[PATTERN]} ['on_assign', 'on_revoke']"]
    clock.now += 1.0  # a join under way is not cut short
    assert not resubscriber.check(consumer, lambda: BACK, PATTERN)
    assert len(consumer.calls) == 2


def test_still_gone_or_unreachable_waits_and_assigned_ends_the_episode() -> None:
    clock, consumer = Clock(), StandInConsumer()
    resubscriber = Resubscriber(clock=clock)
    resubscriber.vanished()
    clock.now += CHECK_S
    assert not resubscriber.check(consumer, dict, PATTERN)  # not created again yet

    def unreachable() -> Mapping[str, int]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    clock.now += CHECK_S
    assert not resubscriber.check(consumer, unreachable, PATTERN)
    assert consumer.calls == []
    consumer.assigned = ["p.gold.orders [0]"]  # it rejoined by itself
    clock.now += CHECK_S
    assert not resubscriber.check(consumer, lambda: BACK, PATTERN)
    consumer.assigned = []
    clock.now += 10 * CHECK_S
    assert not resubscriber.check(consumer, lambda: BACK, PATTERN)  # the episode is over
    assert consumer.calls == []


@pytest.mark.parametrize("episodes", [1, 2])
def test_at_most_attempts_per_episode(episodes: int) -> None:
    clock, consumer = Clock(), StandInConsumer()
    resubscriber = Resubscriber(clock=clock)
    for _ in range(episodes):
        resubscriber.vanished()
        for _ in range(ATTEMPTS + 3):  # an idle member of a larger group: never assigned
            clock.now += CHECK_S
            resubscriber.check(consumer, lambda: BACK, PATTERN)
    assert consumer.calls.count("unsubscribe") == ATTEMPTS * episodes
