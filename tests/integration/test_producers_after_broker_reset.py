"""The long-lived producers (the transform's gold change feed, ingest's dead letters, capture's relay) after
the broker lost its state: the embedded broker, memory-only, restarted on the same port under a producer
that had delivered.

An idempotent producer keeps the producer id the old broker gave it; the new broker does not know it, and
the producer's records then stay queued, neither delivered nor failed (measured: three tries of 100 records,
none delivered, no error reported; a new producer delivered at once). Each publisher must give up that
producer after a failed try, check its topics again, and deliver on the next. Found by the chaos test
(tests/e2e/test_chaos.py), whose transform published nothing for two minutes after the broker restart when
no kill happened to restart it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer

from cdcwh.core.record import RawRecord, Rejection, RejectReason
from cdcwh.embedded.broker import EmbeddedBroker
from cdcwh.errors import ProduceError
from cdcwh.ingest.quarantine import KafkaDeadLetterPublisher, dlq_topic
from cdcwh.kafka import with_producer_defaults
from cdcwh.source.relay import KafkaRelay
from cdcwh.transform.outbox import KafkaOutboxPublisher
from cdcwh.warehouse import BOOKKEEPING


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "run", tmp_path / "logs")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def restarted(broker: EmbeddedBroker, tmp_path: Path) -> EmbeddedBroker:
    """The broker stopped and started again on its port: every topic, group and producer id is gone."""
    port = int(broker.address.rsplit(":", 1)[1])
    broker.stop()
    again = EmbeddedBroker(tmp_path / "run", tmp_path / "logs", port=port)
    again.start()
    return again


def count_messages(bootstrap: str, topics: list[str], expected: int) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe(topics)
    seen = 0
    try:
        for _ in range(60):
            seen += sum(1 for m in consumer.consume(1000, timeout=0.5) if m.error() is None)
            if seen >= expected:
                break
    finally:
        consumer.close()
    return seen


def outbox(rows: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cdcwh")
    con.execute(BOOKKEEPING)
    for i in range(rows):
        con.execute(
            """INSERT INTO cdcwh.outbox (version, mart, key, op, "row", created_at)
            VALUES (1, 'orders', ?, 'upsert', ?, now())""",
            [f'{{"order_id": {i}}}', f'{{"order_id": {i}}}'],
        )
    return con


def test_the_gold_feed_delivers_again_after_the_broker_lost_its_state(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"reset{uuid.uuid4().hex[:6]}"
    publisher = KafkaOutboxPublisher({"bootstrap.servers": broker.address}, prefix, flush_timeout_s=3)
    assert publisher.publish(outbox(20)) == 20
    broker = restarted(broker, tmp_path)
    try:
        con = outbox(30)
        with pytest.raises(ProduceError, match="30 undelivered"):  # the old producer id: nothing delivered
            publisher.publish(con)
        assert publisher.publish(con) == 30  # the next try, with a new producer
        assert con.execute("SELECT count(*) FROM cdcwh.outbox").fetchone() == (0,)
        # the first try's records were dropped from the old producer's queue, not delivered late
        assert count_messages(broker.address, [publisher.topic("orders")], 30) == 30
    finally:
        broker.stop()


def test_dead_letters_are_delivered_again_after_the_broker_lost_its_state(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"reset{uuid.uuid4().hex[:6]}.public.t"
    rejections = [
        Rejection.of(RawRecord(topic, 0, i, 1, b"k", b"not json"), RejectReason.INVALID_JSON, "bad")
        for i in range(10)
    ]
    publisher = KafkaDeadLetterPublisher(
        {"bootstrap.servers": broker.address}, retry_budget_s=30, timeout_s=2
    )
    assert publisher.publish(rejections[:5]) == []
    broker = restarted(broker, tmp_path)
    try:
        assert publisher.publish(rejections[5:]) == []  # within its retry budget, with a new producer
        assert count_messages(broker.address, [dlq_topic(topic)], 5) == 5
    finally:
        broker.stop()


def test_the_capture_relay_delivers_again_after_the_broker_lost_its_state(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"reset{uuid.uuid4().hex[:6]}.public.t"
    config = {"bootstrap.servers": broker.address}
    relay = KafkaRelay({**with_producer_defaults(config), "message.timeout.ms": 2000}, config, 1)
    assert relay.send([(topic, b"k1", b"v1")]) == 1
    broker = restarted(broker, tmp_path)
    try:
        with pytest.raises(ProduceError, match="not delivered"):  # the old producer id: timed out
            relay.send([(topic, b"k2", b"v2")])
        assert relay.send([(topic, b"k2", b"v2")]) == 1  # as the engine sends the batch again
        assert count_messages(broker.address, [topic], 1) == 1
    finally:
        relay.close()
        broker.stop()
