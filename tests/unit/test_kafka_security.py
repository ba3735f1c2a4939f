"""Kafka TLS/SASL settings (``kafka.security_protocol``, ``kafka.sasl_*``, ``kafka.extra``) reach every Kafka
client cdcwh builds: the shared producer, consumer and admin configurations, and the ingest's quixstreams
application (its consumer, producer and topic admin).

The embedded broker (Tansu) speaks neither TLS nor SASL, so no handshake is tested here: instead each client
is built by librdkafka itself with ``ssl.ca.location`` naming a file that does not exist, which librdkafka
refuses when it creates the client (no connection needed). A client the setting did not reach would be
created without complaint."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from cdcwh.config import Settings, load_settings
from cdcwh.ingest.service import build_app
from cdcwh.kafka import client_config, consumer_config, producer_config
from cdcwh.kafka.catchup import CatchUpTracker

MISSING_CA = "/nonexistent/cdcwh-test-ca.pem"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name in list(os.environ):
        if name.startswith("CDCWH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDCWH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("CDCWH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CDCWH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CDCWH_KAFKA__SASL_USERNAME", "cdcwh")
    monkeypatch.setenv("CDCWH_KAFKA__SASL_PASSWORD", "kafka-test-password")
    monkeypatch.setenv("CDCWH_KAFKA__EXTRA", f'{{"ssl.ca.location": "{MISSING_CA}"}}')
    return load_settings()


EXPECTED = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "cdcwh",
    "sasl.password": "kafka-test-password",
    "ssl.ca.location": MISSING_CA,
}


def security(config: dict[str, Any]) -> dict[str, Any]:
    return {key: config.get(key) for key in EXPECTED}


def refused_for_the_ca(build: Callable[[], object]) -> bool:
    try:
        build()
    except KafkaException as exc:
        return "ssl.ca.location" in str(exc)
    return False


def test_the_shared_configurations_carry_the_security_settings(settings: Settings) -> None:
    for config in (client_config(settings), producer_config(settings), consumer_config(settings, "g")):
        assert security(config) == EXPECTED


def test_librdkafka_gets_them_for_producers_consumers_and_admin_clients(settings: Settings) -> None:
    assert refused_for_the_ca(lambda: Producer(producer_config(settings)))
    assert refused_for_the_ca(lambda: Consumer(consumer_config(settings, "g")))
    assert refused_for_the_ca(lambda: AdminClient(client_config(settings)))


def test_the_ingest_quixstreams_app_passes_them_to_its_clients(settings: Settings) -> None:
    app = build_app(settings, [], None, CatchUpTracker("g", 0), 1000)  # type: ignore[arg-type]  # no topics
    # quixstreams creates its librdkafka clients lazily: the private accessors are where that happens
    assert refused_for_the_ca(lambda: app.get_consumer()._consumer)
    assert refused_for_the_ca(lambda: app.get_producer()._producer)
    assert refused_for_the_ca(lambda: app._topic_manager._admin.admin_client)
