"""The long-running sink survives a broker reset: the embedded broker restarts (memory-only, every topic and
consumer group gone) under a running sink, the gold topics come back some seconds later (as the transform
creates them at its next publish), and the sink applies the changes of the new topics. Before, its consumer
stayed without partitions for good after the topics it had been told were gone came back (the chaos test
saw it wait out its two minutes). Real broker (its own, restarted here), real PostgreSQL, the sink in a
thread."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdcwh.config import PROJECT_ROOT
from cdcwh.embedded import EmbeddedBroker
from cdcwh.goldfeed import gold_topic
from cdcwh.kafka import ensure_topics
from cdcwh.models import load_models
from tests.integration.sink.test_gold_topics import customer_emails
from tests.support.pipeline import env_overrides, settings_for
from tests.support.services import sink_running

MODELS = sorted(model.name for model in load_models(PROJECT_ROOT / "sql" / "gold"))
# The restart comes this long after the first change is applied (the consumer settled, idle at its topics'
# ends), and the topics come back this long after it: with shorter times the consumer happened to recover
# without help here; with these it stayed without partitions every time.
SETTLED_S = 5.0
BACK_AFTER_S = 8.0


def customer_change(customer_id: int, email: str, version: int) -> tuple[bytes, bytes]:
    row = {
        "customer_id": customer_id,
        "first_name": "Ada",
        "last_name": "L",
        "email": email,
        "segment": "retail",
        "first_order_date": None,
        "most_recent_order_date": None,
        "number_of_orders": 0,
        "lifetime_value": "0.00",
    }
    value = {"mart": "customers", "op": "upsert", "version": version, "source_ts_ms": None}
    value |= {"key": {"customer_id": customer_id}, "row": row}
    return json.dumps({"customer_id": customer_id}).encode(), json.dumps(value).encode()


def produce(bootstrap: str, topic: str, change: tuple[bytes, bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=change[0], value=change[1])
    assert producer.flush(10) == 0


def test_the_sink_applies_the_new_topics_after_a_broker_reset(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    broker = EmbeddedBroker(tmp_path / "b" / "run", tmp_path / "b" / "logs")
    broker.start()
    address = broker.address
    port = int(address.rsplit(":", 1)[1])
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = env_overrides(
        settings_for(tmp_path / "data", address, prefix),
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=pg_schema,
    )
    gold_prefix = settings.kafka.gold_topic_prefix
    customers = gold_topic(gold_prefix, "customers")
    try:
        with sink_running(settings) as sink_alive:
            produce(address, customers, customer_change(7, "before@example.com", 1))
            wait_for_emails(postgres_dsn, pg_schema, ["before@example.com"], sink_alive)
            time.sleep(SETTLED_S)  # the group settled, the consumer idle at its topics' ends
            broker.stop()  # memory-only: the gold topics and the sink's group are gone
            broker = EmbeddedBroker(tmp_path / "b" / "run", tmp_path / "b" / "logs", port=port)
            broker.start()
            time.sleep(BACK_AFTER_S)  # the sink polls on, told its topics are unknown
            names = [gold_topic(gold_prefix, name) for name in MODELS]
            partitions = settings.transform.gold_partitions
            ensure_topics(AdminClient({"bootstrap.servers": address}), names, partitions)
            produce(address, customers, customer_change(8, "after@example.com", 2))
            wait_for_emails(postgres_dsn, pg_schema, ["after@example.com", "before@example.com"], sink_alive)
    finally:
        broker.stop()


def wait_for_emails(dsn: str, schema: str, expected: list[str], sink_alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while (found := sorted(customer_emails(dsn, schema))) != expected:
        assert sink_alive(), "the sink stopped"
        assert time.monotonic() < deadline, f"the sink did not apply the change: {found}"
        time.sleep(0.2)
