"""Kafka client settings shared by every service (an adapter: core/ never imports this).

The bootstrap servers are resolved once per process (``bootstrap``): finding the embedded broker means reading
its run file and probing it with a client, which every producer, consumer and admin client used to repeat.
A test that starts another broker for the same data dir calls ``reset_bootstrap``.

Also here: the one producer configuration (``producer_config`` / ``with_producer_defaults``), which every
cdcwh producer uses, and the one delivery-failure callback (``DeliveryFailures``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
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


# idempotent, acknowledged by every in-sync replica, batched for a few milliseconds
PRODUCER_DEFAULTS: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}

_bootstraps: dict[tuple[str | None, Path], str] = {}
_bootstraps_lock = threading.Lock()


def bootstrap(settings: Settings) -> str:
    """The bootstrap servers: the configured ones, else the embedded broker recorded for the data dir,
    probed on the first call of the process only (``ServiceNotRunning`` when it does not answer; a failure
    is not remembered)."""
    key = (settings.kafka.bootstrap_servers, settings.run_dir)
    with _bootstraps_lock:
        known = _bootstraps.get(key)
    if known is not None:
        return known
    resolved = kafka_bootstrap(settings)
    with _bootstraps_lock:
        _bootstraps[key] = resolved
    return resolved


def reset_bootstrap() -> None:
    """Forget the resolved bootstrap servers (a test that restarts the embedded broker elsewhere)."""
    with _bootstraps_lock:
        _bootstraps.clear()


def client_config(settings: Settings) -> dict[str, Any]:
    """bootstrap.servers plus security pass-through; resolves the embedded broker when none is configured.

    librdkafka's own log lines (``%3|...|FAIL|...`` on stderr by default) go to the ``librdkafka`` logger
    instead, in the format of every other record (cdcwh.logs); a client hands them over when it is polled.
    """
    return {
        **settings.kafka.client_config(bootstrap(settings)),
        "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
    }


def with_producer_defaults(client: dict[str, Any]) -> dict[str, Any]:
    """``client`` (a ``client_config``) with cdcwh's producer settings (``PRODUCER_DEFAULTS``)."""
    return {**client, **PRODUCER_DEFAULTS}


def producer_config(settings: Settings) -> dict[str, Any]:
    return with_producer_defaults(client_config(settings))


def renewed_producer(old: Producer, config: dict[str, Any]) -> Producer:
    """A new producer in place of ``old``, whose queued records are dropped (the caller sends them again).

    For a try of which nothing was delivered: an idempotent producer keeps the producer id a broker gave
    it, and a broker that lost its state (a restarted memory-only one, a new cluster) does not know that
    id; the old producer's records then stay queued or time out, and so would every later one, until the
    process restarts (seen with the embedded broker: the transform published nothing more). A new producer
    asks for a new id. The caller also checks its topics again: such a broker lost them too."""
    old.purge()
    old.flush(0)  # serves the purged records' delivery reports before the producer is dropped
    return Producer(config)


class DeliveryFailures:
    """A producer's ``on_delivery`` callback that collects the failed deliveries as ``"<topic>: <error>"``;
    the caller flushes, then raises if ``failures`` is not empty."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.delivered = 0

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error}")
        else:
            self.delivered += 1

    def __bool__(self) -> bool:
        return bool(self.failures)


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
