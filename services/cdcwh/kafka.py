"""Kafka client settings shared by every service (an adapter: core/ never imports this)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from cdcwh.config import Settings
from cdcwh.embedded import kafka_bootstrap, uses_embedded_broker
from cdcwh.errors import InfrastructureError
from cdcwh.logs import LIBRDKAFKA_LOGGER

# A consumer-group join on the embedded broker takes about half of session.timeout.ms.
EMBEDDED_SESSION_TIMEOUT_MS = 6000
EMBEDDED_HEARTBEAT_INTERVAL_MS = 500
TOPIC_TIMEOUT_S = 30.0
METADATA_REFRESH_MS = 10_000


def client_config(settings: Settings) -> dict[str, Any]:
    """bootstrap.servers plus security pass-through; resolves the embedded broker when none is configured.

    librdkafka's own log lines (``%3|...|FAIL|...`` on stderr by default) go to the ``librdkafka`` logger
    instead, in the format of every other record (cdcwh.logs); a client hands them over when it is polled.
    """
    return {
        **settings.kafka.client_config(kafka_bootstrap(settings)),
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    return {**client_config(settings), "enable.idempotence": True, "acks": "all", "linger.ms": 5}


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """A manual-commit consumer; session timings tuned for the embedded broker unless configured."""
    config = {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # a subscribed topic that is re-created (a restarted memory-only broker, a topic deleted and made
        # again) is seen at the next metadata refresh: every 10 s rather than librdkafka's 5 minutes
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
    }
    embedded = uses_embedded_broker(settings)
    session = settings.kafka.session_timeout_ms or (EMBEDDED_SESSION_TIMEOUT_MS if embedded else None)
    heartbeat = settings.kafka.heartbeat_interval_ms or (EMBEDDED_HEARTBEAT_INTERVAL_MS if embedded else None)
    if session is not None:
        config["session.timeout.ms"] = session
    if heartbeat is not None:
        config["heartbeat.interval.ms"] = heartbeat
    if settings.kafka.fetch_backoff_ms:
        config["queued.min.messages"] = 1
        config["fetch.queue.backoff.ms"] = settings.kafka.fetch_backoff_ms
    return config


def ensure_topics(admin: Any, topics: Iterable[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions (broker-default replication); existing is fine.

    ``admin`` is a ``confluent_kafka.admin.AdminClient``.
    """
    new = [NewTopic(topic, num_partitions=partitions) for topic in topics]
    if not new:
        return
    futures = admin.create_topics(new, operation_timeout=TOPIC_TIMEOUT_S, request_timeout=TOPIC_TIMEOUT_S)
    for topic, future in futures.items():
        try:
            future.result(timeout=TOPIC_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise InfrastructureError(
                f"cannot create topic {topic} ({partitions} partitions): {error}"
            ) from exc
