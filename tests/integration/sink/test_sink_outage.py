"""The long-running sink while PostgreSQL is away: it keeps its group, retries the batch it holds, and loses
no change that arrives meanwhile, also when the group rebalances during the outage (another sink member joins
and leaves, or a new model's topic appears): the partitions it is given then that it did not hold are not
paused, and what it polls from them while it waits must be read again, not dropped. Real broker, real
PostgreSQL behind a TCP gate (tests/support/tcp_gate.py) that takes the server away from the sink and gives
it back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from cdcwh.config import Settings
from cdcwh.kafka import ensure_topics
from cdcwh.sink.service import sink_group
from tests.support.marts import customer_change
from tests.support.pipeline import env_overrides, settings_for
from tests.support.services import sink_running
from tests.support.tcp_gate import TcpGate, tcp_gate


def produce(bootstrap: str, topic: str, ids: range, partition: int = -1) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in ids:
        key, value = customer_change(i)
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(10) == 0


def customer_ids(dsn: str, schema: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT customer_id FROM {}").format(sql.Identifier(schema, "customers"))
        try:
            return {row[0] for row in conn.execute(query).fetchall()}
        except psycopg.errors.UndefinedTable:  # the sink has not made its mart tables yet
            return set()


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@dataclass
class Outage:
    settings: Settings
    topic: str
    gate: TcpGate
    sink_alive: Callable[[], bool]


@contextmanager
def sink_in_an_outage(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> Iterator[Outage]:
    """A running sink that applied customers 1-10, then lost PostgreSQL (the gate closed) while it held a
    batch of 11-20: it retries that batch and waits, its partitions paused."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with tcp_gate(postgres_dsn) as gate:
        settings = env_overrides(
            settings_for(tmp_path / "data", kafka_bootstrap, prefix),
            CDCWH_POSTGRES__DSN=gate.dsn,
            CDCWH_POSTGRES__SCHEMA=pg_schema,
        )
        topic = f"{settings.kafka.gold_topic_prefix}.customers"
        with sink_running(settings) as sink_alive:
            produce(kafka_bootstrap, topic, range(1, 11))
            wait_for(
                lambda: sink_alive() and customer_ids(postgres_dsn, pg_schema) == set(range(1, 11)),
                60,
                "the first changes were not applied",
            )
            gate.close()  # PostgreSQL away: the next batch fails and is retried while the sink waits
            produce(kafka_bootstrap, topic, range(11, 21))
            time.sleep(3)  # the sink holds that batch and pauses its partitions
            yield Outage(settings, topic, gate, sink_alive)


def test_changes_polled_while_postgres_is_away_are_applied_after_it_is_back(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> None:
    with sink_in_an_outage(tmp_path, kafka_bootstrap, postgres_dsn, pg_schema) as outage:
        settings, gate, sink_alive = outage.settings, outage.gate, outage.sink_alive
        # a new gold topic appears (a new model's): the sink is given its partition, not paused, while
        # it waits, and polls its changes
        new_topic = f"{settings.kafka.gold_topic_prefix}.zz_new_model"
        ensure_topics(AdminClient({"bootstrap.servers": kafka_bootstrap}), [new_topic], 1)
        produce(kafka_bootstrap, new_topic, range(21, 121))
        time.sleep(8)  # the sink's metadata refresh (2 s), the rebalance, and its wait
        assert sink_alive()
        gate.reopen()
        wait_for(
            lambda: sink_alive() and customer_ids(postgres_dsn, pg_schema) == set(range(1, 121)),
            60,
            f"changes lost: {sorted(set(range(1, 121)) - customer_ids(postgres_dsn, pg_schema))}",
        )


def test_a_partition_lost_while_paused_is_read_again_when_it_comes_back(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> None:
    """librdkafka keeps an application's pause on a partition the consumer loses and is given again later:
    the sink paused every partition for the outage, another member took one of them meanwhile, and when it
    leaves after the outage the sink must read that partition again rather than hold it paused for good."""
    with sink_in_an_outage(tmp_path, kafka_bootstrap, postgres_dsn, pg_schema) as outage:
        settings, topic, gate, sink_alive = outage.settings, outage.topic, outage.gate, outage.sink_alive
        member = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": sink_group(settings),
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "enable.auto.commit": False,
            }
        )
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while not member.assignment():  # it takes some of the partitions the sink had paused
            assert time.monotonic() < deadline, "the second member was given no partition"
            member.poll(0.2)
        taken = len(member.assignment())
        gate.reopen()  # the sink applies its batch and resumes what it holds now
        wait_for(
            lambda: sink_alive() and set(range(1, 21)) - customer_ids(postgres_dsn, pg_schema) <= set(),
            60,
            "the held batch was not applied",
        )
        member.close()  # its partitions go back to the sink
        assert taken >= 1
        produce(kafka_bootstrap, topic, range(21, 121))  # on every partition, by key
        wait_for(
            lambda: sink_alive() and customer_ids(postgres_dsn, pg_schema) == set(range(1, 121)),
            60,
            f"not read: {sorted(set(range(1, 121)) - customer_ids(postgres_dsn, pg_schema))}",
        )
