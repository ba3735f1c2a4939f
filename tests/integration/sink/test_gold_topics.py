"""The gold change topics exist before the first change: the transform creates every model's topic at its
first step and the sink creates them before it joins its group, so a sink subscribed by regex is assigned
them all at once instead of rebalancing for each topic as its first change arrives. Real broker, real
PostgreSQL, the long-running sink in a thread."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from cdcwh.config import PROJECT_ROOT
from cdcwh.models import load_models
from cdcwh.transform.service import TransformService
from tests.support.marts import customer_change
from tests.support.pipeline import env_overrides, settings_for
from tests.support.services import sink_running

MODELS = sorted(model.name for model in load_models(PROJECT_ROOT / "sql" / "gold"))


def gold_topics(bootstrap: str, prefix: str) -> dict[str, int]:
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return {
        name.removeprefix(prefix + "."): len(topic.partitions)
        for name, topic in topics.items()
        if name.startswith(prefix + ".")
    }


def test_the_transform_creates_every_models_topic_at_its_first_step(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    assert gold_topics(kafka_bootstrap, settings.kafka.gold_topic_prefix) == {}
    result = TransformService(settings).step()
    assert result.batch_id is None, "bronze is empty: the step ran no batch"
    partitions = settings.transform.gold_partitions
    assert gold_topics(kafka_bootstrap, settings.kafka.gold_topic_prefix) == dict.fromkeys(MODELS, partitions)


def test_the_sink_creates_them_before_it_joins_and_applies_the_first_change(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str, pg_schema: str
) -> None:
    prefix, schema = f"t{uuid.uuid4().hex[:8]}", pg_schema
    settings = env_overrides(
        settings_for(tmp_path / "data", kafka_bootstrap, prefix),
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=schema,
    )
    gold_prefix = settings.kafka.gold_topic_prefix
    with sink_running(settings) as sink_alive:
        deadline = time.monotonic() + 60
        while set(gold_topics(kafka_bootstrap, gold_prefix)) != set(MODELS):
            assert sink_alive(), "the sink stopped"
            assert time.monotonic() < deadline, f"topics: {gold_topics(kafka_bootstrap, gold_prefix)}"
            time.sleep(0.2)
        # no transform ran: every topic is the sink's, and the sink consumes from them
        key, value = customer_change(7)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(f"{gold_prefix}.customers", key=key, value=value)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 60
        while (found := customer_emails(postgres_dsn, schema)) != ["ada@example.com"]:
            assert sink_alive(), "the sink stopped"
            assert time.monotonic() < deadline, f"the sink did not apply the change: {found}"
            time.sleep(0.2)


def customer_emails(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".customers',)).fetchone()
        if exists is None or exists[0] is None:
            return []
        query = sql.SQL("SELECT email FROM {}").format(sql.Identifier(schema, "customers"))
        return [str(email) for (email,) in conn.execute(query).fetchall()]
