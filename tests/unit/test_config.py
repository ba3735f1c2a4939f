from __future__ import annotations

import os
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


# ---- unknown names, case, the config and secrets files ----------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "suggested"),
    [
        ("CDCWH_KAFKA__TOPIC", "CDCWH_KAFKA__TOPICS"),
        ("CDCWH_METRICS__PROT", "CDCWH_METRICS__PORT"),
        ("CDCWH_DATA_DIRR", "CDCWH_DATA_DIR"),
        ("CDCWH_POSTGRES__SHEMA", "CDCWH_POSTGRES__SCHEMA"),
        ("cdcwh_ingest__commit_record", "CDCWH_INGEST__COMMIT_RECORDS"),
    ],
)
def test_an_unknown_variable_fails_naming_it_and_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, suggested: str
) -> None:
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{variable}: no such setting; did you mean {suggested}?" in str(info.value)


def test_an_unknown_variable_without_a_close_setting_lists_the_valid_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDCWH_FOO", "1")
    monkeypatch.setenv("CDCWH_LOG_LEVEL__X", "1")  # a setting that has no parts
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "CDCWH_FOO: no such setting; valid: " in message
    assert "CDCWH_DATA_DIR" in message.split("CDCWH_FOO:")[1]
    assert "CDCWH_LOG_LEVEL__X: no such setting; CDCWH_LOG_LEVEL has no parts" in message


def test_an_unknown_key_in_a_section_given_as_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCWH_KAFKA", '{"topic": "x"}')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "CDCWH_KAFKA__TOPIC: no such setting; did you mean CDCWH_KAFKA__TOPICS?" in str(info.value)


def test_variables_that_are_not_settings_and_librdkafka_pass_through_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDCWH_TEST_KAFKA_BOOTSTRAP", "b:1")  # the test suite's
    monkeypatch.setenv("CDCWH_FAULT_POINT", "x")  # the crash tests' fault injection
    monkeypatch.setenv("CDCWH_KAFKA__EXTRA__ssl.ca.location", "/ca.pem")  # any key below a dict setting
    assert load_settings().kafka.extra == {"ssl.ca.location": "/ca.pem"}


def test_an_unknown_key_in_the_toml_file_fails_naming_the_file_and_the_closest_key(tmp_path: Path) -> None:
    (tmp_path / "cdcwh.toml").write_text('log_levle = "INFO"\n[kafka]\ntopic = "x"\n[metrics]\nprot = 1\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "cdcwh.toml: log_levle: no such setting; did you mean log_level?" in message
    assert "cdcwh.toml: kafka.topic: no such setting; did you mean kafka.topics?" in message
    assert "cdcwh.toml: metrics.prot: no such setting; did you mean metrics.port?" in message


def test_a_config_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    (tmp_path / "cdcwh.toml").write_text("[kafka\n")
    with pytest.raises(ConfigError, match=r"cdcwh.toml: cannot read it as TOML"):
        load_settings()


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("INFO", "INFO")])
def test_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch, given: str, level: str) -> None:
    monkeypatch.setenv("CDCWH_LOG_LEVEL", given)
    assert load_settings().log_level == level


def test_log_format_is_read_in_any_case_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().log_format == "auto"
    monkeypatch.setenv("CDCWH_LOG_FORMAT", "JSON")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("CDCWH_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="CDCWH_LOG_FORMAT"):
        load_settings()


def test_cdcwh_config_names_the_file_instead_of_cdcwh_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "cdcwh.toml").write_text("[metrics]\nport = 9500\n")
    elsewhere = tmp_path / "conf" / "prod.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("[metrics]\nport = 9700\n")
    monkeypatch.setenv("CDCWH_CONFIG", str(elsewhere))
    assert load_settings().metrics.port == 9700
    monkeypatch.setenv("CDCWH_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"CDCWH_CONFIG: no such file .*missing\.toml"):
        load_settings()


def test_the_secrets_file_is_merged_over_the_config_file_and_env_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "cdcwh.toml").write_text(
        '[kafka]\nsasl_username = "svc"\ntopics = "^inv\\\\..*$"\n[postgres]\nschema = "m"\n'
    )
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[kafka]\nsasl_password = "s3cret"\n[postgres]\ndsn = "postgresql://u:pw@db/x"\n')
    secrets.chmod(0o600)
    monkeypatch.setenv("CDCWH_SECRETS_FILE", str(secrets))
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "s3cret"
    assert (settings.kafka.sasl_username, settings.kafka.topics) == ("svc", r"^inv\..*$")  # kept, merged
    assert settings.postgres.schema_ == "m"
    monkeypatch.setenv("CDCWH_KAFKA__SASL_PASSWORD", "from-env")
    assert load_settings().kafka.client_config("b:1")["sasl.password"] == "from-env"


def test_an_unknown_key_in_the_secrets_file_names_that_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[postgres]\ndns = "postgresql://u:pw@db/x"\n')
    secrets.chmod(0o600)
    monkeypatch.setenv("CDCWH_SECRETS_FILE", str(secrets))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{secrets}: postgres.dns: no such setting; did you mean postgres.dsn?" in str(info.value)
    assert "pw@db" not in str(info.value)


def test_kubernetes_service_variables_are_not_taken_for_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Kubernetes Service named cdcwh-sink injects CDCWH_SINK_PORT etc. into every pod of the namespace."""
    from cdcwh.config import load_settings

    for name in ("CDCWH_SINK_PORT", "CDCWH_SINK_SERVICE_HOST", "CDCWH_METRICS_PORT_9100_TCP_ADDR"):
        monkeypatch.setenv(name, "tcp://10.0.0.1:9100")
    assert load_settings().metrics.port is not None
    monkeypatch.setenv("CDCWH_METRCS__PORT", "1")  # a misspelt setting is still refused
    with pytest.raises(ConfigError, match="CDCWH_METRCS__PORT"):
        load_settings()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secrets_file_readable_by_others_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: int
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[kafka]\nsasl_password = "s3cret-canary"\n')
    secrets.chmod(mode)
    monkeypatch.setenv("CDCWH_SECRETS_FILE", str(secrets))
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert f"CDCWH_SECRETS_FILE: {secrets} is readable by other users (mode {mode:04o})" in message
    assert f"chmod 600 {secrets}" in message and "s3cret-canary" not in message
    secrets.chmod(0o400)
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "s3cret-canary"


@pytest.mark.parametrize(
    ("variable", "dsn"),
    [
        ("CDCWH_POSTGRES__DSN", "host=db password=Sekr et-canary"),
        ("CDCWH_POSTGRES__SINK_DSN", "postgresql://u:Sekr%zzcanary@db/x"),
        ("CDCWH_SOURCE__DSN", "host=db password='unterminated-canary"),
    ],
)
def test_a_dsn_that_does_not_parse_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, dsn: str
) -> None:
    """libpq's own parse error quotes the text near the fault (``missing "=" after "et-canary"``)."""
    monkeypatch.setenv(variable, dsn)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message and "not a libpq connection string" in message
    assert "canary" not in message and "Sekr" not in message


def test_an_invalid_secret_setting_is_named_but_its_value_not_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "cdcwh.toml"
    config.write_text("[kafka]\nsasl_password = 12345678\nsession_timeout_ms = 5\n")
    monkeypatch.setenv("CDCWH_CONFIG", str(config))
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "CDCWH_KAFKA__SASL_PASSWORD" in message and "12345678" not in message
    assert "CDCWH_KAFKA__SESSION_TIMEOUT_MS" in message and "(got 5)" in message  # others still shown


def test_a_section_built_directly_does_not_quote_a_secret_in_its_error() -> None:
    from pydantic import ValidationError

    from cdcwh.config import Settings

    with pytest.raises(ValidationError) as info:
        Settings(postgres={"dsn": "host=db password=x dsn-canary"})  # type: ignore[arg-type]
    assert "postgres.dsn" in str(info.value)
    assert "dsn-canary" not in str(info.value)


def test_a_purpose_without_a_dsn_fails_at_start_once_roles_per_purpose_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only ``postgres.sink_dsn`` set, the owner purpose must not quietly connect to ``postgres.dsn``'s
    fallback, the embedded Postgres: a ConfigError names the setting to set."""
    from cdcwh.config import Settings
    from cdcwh.embedded import postgres_dsn
    from cdcwh.errors import ServiceNotRunning

    for var in [v for v in os.environ if v.startswith("CDCWH_")]:
        monkeypatch.delenv(var)

    sink = "postgresql://cdcwh_sink@db/warehouse"
    settings = Settings(data_dir=tmp_path, postgres={"sink_dsn": sink})  # type: ignore[arg-type]
    assert postgres_dsn(settings, "sink") == sink
    assert settings.postgres.dsn_setting("sink") == "postgres.sink_dsn"
    assert settings.postgres.has_dsn("sink") and not settings.postgres.has_dsn("owner")
    for purpose in ("owner", "audit", "reader"):
        named = rf"postgres\.{purpose}_dsn \(CDCWH_POSTGRES__{purpose.upper()}_DSN\)"
        with pytest.raises(ConfigError, match=named):
            postgres_dsn(settings, purpose)  # type: ignore[arg-type]
    common = "postgresql://admin@db/warehouse"
    both = Settings(data_dir=tmp_path, postgres={"sink_dsn": sink, "dsn": common})  # type: ignore[arg-type]
    assert postgres_dsn(both, "owner") == common and both.postgres.dsn_setting("owner") == "postgres.dsn"
    alone = Settings(data_dir=tmp_path)  # nothing set: the embedded Postgres, none recorded here
    assert alone.postgres.has_dsn("owner")
    with pytest.raises(ServiceNotRunning):
        postgres_dsn(alone, "owner")
