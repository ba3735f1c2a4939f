"""Consumer settings: the session timings the embedded broker needs, and the opt-in fetch back-off.

The embedded broker is recognised by its record in the data dir; these tests write that record for an address
nothing listens on, since building a consumer's settings never connects.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdcwh.config import Settings, load_settings
from cdcwh.embedded.broker import NAME as BROKER
from cdcwh.embedded.registry import write_record
from cdcwh.errors import ConfigError
from cdcwh.kafka import consumer_config

ADDRESS = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CDCWH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDCWH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDCWH_KAFKA__BOOTSTRAP_SERVERS", ADDRESS)


def embedded_settings() -> Settings:
    settings = load_settings()
    write_record(settings.run_dir, BROKER, os.getpid(), ADDRESS)
    return settings


def test_consumers_of_the_embedded_broker_get_short_sessions_and_keep_the_client_prefetch() -> None:
    config = consumer_config(embedded_settings(), "g")
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (6000, 500)
    # a back-off between fetches would cap a catch-up at what the broker returns per fetch: off by default
    assert "queued.min.messages" not in config
    assert "fetch.queue.backoff.ms" not in config


def test_other_brokers_keep_the_client_defaults() -> None:
    config = consumer_config(load_settings(), "g")  # no record: a broker we did not start
    assert "queued.min.messages" not in config
    assert "fetch.queue.backoff.ms" not in config
    assert "session.timeout.ms" not in config


def test_the_back_off_applies_to_any_broker_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCWH_KAFKA__FETCH_BACKOFF_MS", "250")
    for settings in (load_settings(), embedded_settings()):
        config = consumer_config(settings, "g")
        assert (config["queued.min.messages"], config["fetch.queue.backoff.ms"]) == (1, 250)


def test_a_negative_back_off_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCWH_KAFKA__FETCH_BACKOFF_MS", "-5")
    with pytest.raises(ConfigError, match="CDCWH_KAFKA__FETCH_BACKOFF_MS"):
        load_settings()


def test_the_embedded_broker_is_resolved_and_probed_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every client used to probe the embedded broker again; now the first call does, until a reset."""
    from cdcwh import kafka
    from cdcwh.embedded import broker
    from cdcwh.errors import ServiceNotRunning

    monkeypatch.delenv("CDCWH_KAFKA__BOOTSTRAP_SERVERS")
    probes: list[str] = []
    monkeypatch.setattr(
        broker, "broker_answers", lambda address, timeout_s=2.0: probes.append(address) or True
    )
    kafka.reset_bootstrap()
    settings = load_settings()
    with pytest.raises(ServiceNotRunning, match="cdcwh broker"):
        kafka.client_config(settings)  # nothing recorded yet: the failure is not remembered
    write_record(settings.run_dir, BROKER, os.getpid(), ADDRESS)
    configs = [kafka.client_config(settings), kafka.producer_config(settings), consumer_config(settings, "g")]
    assert [c["bootstrap.servers"] for c in configs] == [ADDRESS] * 3
    assert probes == [ADDRESS]
    kafka.reset_bootstrap()
    kafka.client_config(settings)
    assert probes == [ADDRESS, ADDRESS]
    kafka.reset_bootstrap()


def test_every_producer_gets_the_one_producer_config() -> None:
    from cdcwh.kafka import PRODUCER_DEFAULTS, producer_config, with_producer_defaults

    settings = load_settings()
    expected = {"bootstrap.servers": ADDRESS, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    config = producer_config(settings)
    # librdkafka's log lines are handed to the ``librdkafka`` logger (cdcwh.logs formats them)
    assert config.pop("logger").name == "librdkafka"
    assert config == expected
    assert with_producer_defaults({"bootstrap.servers": ADDRESS}) == expected
    assert PRODUCER_DEFAULTS.items() <= expected.items()
