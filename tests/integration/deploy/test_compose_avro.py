"""docker-compose.avro.yml (no Docker engine here): the Avro variant layered over docker-compose.yml names
services that exist or are new and pinned, its connector differs from the JSON one only in the converters,
and the connector and cdcwh-ingest point at the same registry, through a real cdcwh setting."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cdcwh.config import load_settings
from tests.integration.deploy.conftest import COMPOSE_FILE, DEPLOY, ROOT
from tests.integration.deploy.test_compose import assert_setting_exists, env_of, host_ports

OVERRIDE = ROOT / "docker-compose.avro.yml"
AVRO_CONVERTER = "io.confluent.connect.avro.AvroConverter"


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def test_the_override_adds_a_pinned_registry_and_an_avro_capable_connect() -> None:
    base, override = load(COMPOSE_FILE)["services"], load(OVERRIDE)["services"]
    assert set(override) - set(base) == {"schema-registry"}
    registry = override["schema-registry"]
    assert registry["image"].split(":")[1][0].isdigit()  # pinned to a version
    assert "healthcheck" in registry and "kafka" in registry["depends_on"]
    connect = override["connect"]
    dockerfile = ROOT / connect["build"]["context"] / connect["build"]["dockerfile"]
    # the Avro image extends exactly the Connect image of the JSON topology
    assert f"FROM {base['connect']['image']}\n" in dockerfile.read_text()
    assert "kafka-connect-avro-converter" in dockerfile.read_text()
    ports = [p for s in {**base, **override}.values() for p in host_ports(s)]
    assert len(ports) == len(set(ports)), ports


def test_the_avro_connector_is_the_json_one_with_avro_converters() -> None:
    override = load(OVERRIDE)["services"]
    config_path = override["connect-init"]["environment"]["CONNECTOR_CONFIG"]
    avro = json.loads((DEPLOY / "debezium" / Path(config_path).name).read_text())["config"]
    plain = json.loads((DEPLOY / "debezium" / "shop-connector.json").read_text())["config"]
    converter_keys = {k for k in {**avro, **plain} if ".converter" in k or k.endswith("converter")}
    assert {k: v for k, v in avro.items() if k not in converter_keys} == {
        k: v for k, v in plain.items() if k not in converter_keys
    }
    assert avro["key.converter"] == avro["value.converter"] == AVRO_CONVERTER
    url = avro["value.converter.schema.registry.url"]
    assert avro["key.converter.schema.registry.url"] == url
    parts = urlsplit(url)
    assert parts.hostname == "schema-registry"
    assert parts.port in host_ports(override["schema-registry"])


def test_ingest_reads_the_registry_the_connector_writes_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no cdcwh.toml
    base, override = load(COMPOSE_FILE)["services"], load(OVERRIDE)["services"]
    env = {**env_of(base["cdcwh-ingest"]), **env_of(override["cdcwh-ingest"])}
    for var in env:
        if var.startswith("CDCWH_"):
            assert_setting_exists(var)
    with monkeypatch.context() as patch:
        for var in [v for v in os.environ if v.startswith("CDCWH_")]:
            patch.delenv(var)
        for var, value in env.items():
            patch.setenv(var, value)
        settings = load_settings()
    avro = json.loads((DEPLOY / "debezium" / "shop-connector-avro.json").read_text())["config"]
    assert settings.schema_registry.url == avro["value.converter.schema.registry.url"]
