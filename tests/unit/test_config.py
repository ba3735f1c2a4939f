from __future__ import annotations

from pathlib import Path

import pytest

from cdcwh.config import load_settings, setting_name
from cdcwh.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CDCWH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray cdcwh.toml


def test_defaults_are_the_embedded_local_setup() -> None:
    settings = load_settings()
    assert settings.data_dir == Path(".cdcwh")
    assert settings.kafka.bootstrap_servers is None
    assert settings.postgres.dsn is None
    assert settings.kafka.topics == r"^shop\.[^.]+\.[^.]+$"


def test_nested_env_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCWH_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("CDCWH_INGEST__COMMIT_RECORDS", "123")
    monkeypatch.setenv("CDCWH_DATA_DIR", "/var/lib/cdcwh")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.ingest.commit_records == 123
    assert settings.data_dir == Path("/var/lib/cdcwh")


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cdcwh.toml").write_text('[kafka]\ntopics = "^inv\\\\..*$"\n[metrics]\nport = 9500\n')
    monkeypatch.setenv("CDCWH_METRICS__PORT", "9600")
    settings = load_settings()
    assert settings.kafka.topics == r"^inv\..*$"
    assert settings.metrics.port == 9600


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CDCWH_KAFKA__TOPICS", "(["),
        ("CDCWH_METRICS__PORT", "70000"),
        ("CDCWH_INGEST__COMMIT_INTERVAL_S", "0"),
        ("CDCWH_LOG_LEVEL", "LOUD"),
        ("CDCWH_TRANSFORM__INTERVAL_S", "soon"),
    ],
)
def test_invalid_value_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value)
    assert value in str(info.value)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCWH_POSTGRES__DSN", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("CDCWH_KAFKA__SASL_PASSWORD", "s3cret")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    assert settings.kafka.client_config("b:1")["sasl.password"] == "s3cret"


def test_setting_name_maps_locations_to_variables() -> None:
    assert setting_name(("kafka", "topics")) == "CDCWH_KAFKA__TOPICS"
    assert setting_name(("postgres", "schema_")) == "CDCWH_POSTGRES__SCHEMA"
