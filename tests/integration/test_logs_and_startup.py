"""What the services write when no terminal is attached (one JSON object per line, in one format with
quixstreams, no stray warning), where ``cdcwh run --until-caught-up`` keeps its services' logs, and how a
start against a broker or database that is not there ends: one line naming the setting."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cdcwh.config import Settings
from cdcwh.errors import InfrastructureError
from cdcwh.preflight import check_kafka, check_postgres
from tests.support.pipeline import cli_env, produce_shop, settings_for

KEYS = {"time", "service", "level", "logger", "message"}
STAGES = ("ingest", "transform", "sink")


def json_lines(text: str, where: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object with the common keys (fails naming the first that is not)."""
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{where} line {number} is not JSON: {line!r}")
        assert isinstance(event, dict) and KEYS <= set(event), f"{where} line {number}: {line!r}"
        events.append(event)
    assert events, f"{where} is empty"
    return events


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_batch_run_logs_one_json_object_per_line_and_keeps_each_services_log(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = settings_for(tmp_path / "data", kafka_bootstrap, prefix)
    _, changes = produce_shop(kafka_bootstrap, prefix, events=200, seed=5)
    env = cli_env(settings, CDCWH_POSTGRES__DSN=postgres_dsn, CDCWH_POSTGRES__SCHEMA=f"marts_{prefix}")
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "run", "--until-caught-up"],
        env=env,
        capture_output=True,  # no terminal: json is the default
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = json_lines(result.stderr, "stderr")
    assert {e["service"] for e in events} == {"run", *STAGES}
    assert any(e["logger"].startswith("quixstreams") for e in events), "no quixstreams record"
    assert "Warning" not in result.stderr and not any(e["logger"] == "py.warnings" for e in events)
    assert result.stdout == ""
    for stage in STAGES:
        kept = (settings.data_dir / "logs" / f"{stage}.log").read_text()
        assert {e["service"] for e in json_lines(kept, f"{stage}.log")} == {stage}
        assert set(kept.splitlines()) <= set(result.stderr.splitlines()), f"{stage}: not relayed"
    # the relayed records are the services' real progress: every change and tombstone landed
    landed = [e["message"] for e in events if e["service"] == "ingest" and e["message"].startswith("landed ")]
    records = len(changes) + sum(c.op == "d" for c in changes)
    assert sum(int(m.split()[1].rstrip(",")) for m in landed) == records, landed


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_unreachable_broker_is_one_line_naming_the_setting(tmp_path: Path, log_format: str) -> None:
    address = f"127.0.0.1:{closed_port()}"
    env = cli_env(Settings(data_dir=tmp_path / "data", kafka={"bootstrap_servers": address}))
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "--log-format", log_format, "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    message = json.loads(lines[0])["message"] if log_format == "json" else lines[0].removeprefix("error: ")
    assert message.startswith(f"kafka.bootstrap_servers: broker {address} unreachable (")


def test_an_unknown_setting_stops_a_service_before_it_starts(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = cli_env(settings_for(tmp_path / "data", kafka_bootstrap, "unused"), CDCWH_INGEST__COMMIT_RECORD="9")
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "ingest"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    [event] = json_lines(result.stderr, "stderr")
    assert event["level"] == "ERROR"
    assert (
        "CDCWH_INGEST__COMMIT_RECORD: no such setting; did you mean CDCWH_INGEST__COMMIT_RECORDS?"
        in (event["message"])
    )
    assert not (tmp_path / "data" / "iceberg").exists()


def test_an_unreachable_database_names_the_setting_and_not_the_password() -> None:
    settings = Settings(postgres={"dsn": f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/x"})  # type: ignore[arg-type]
    with pytest.raises(InfrastructureError) as info:
        check_postgres(settings)
    message = str(info.value)
    assert message.startswith("postgres.dsn: cannot connect to the database (")
    assert "\n" not in message and "hunter2" not in message


def test_an_unreachable_owner_database_is_caught_at_start_too(postgres_dsn: str) -> None:
    """The sink's DSN answers, its owner DSN (the start-up DDL) does not: the preflight names the owner's."""
    owner = f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/x"
    settings = Settings(postgres={"sink_dsn": postgres_dsn, "owner_dsn": owner})  # type: ignore[arg-type]
    with pytest.raises(InfrastructureError) as info:
        check_postgres(settings)
    assert str(info.value).startswith("postgres.owner_dsn: cannot connect to the database (")
    check_postgres(Settings(postgres={"sink_dsn": postgres_dsn, "owner_dsn": postgres_dsn}))  # type: ignore[arg-type]


def test_the_config_option_names_the_file_for_the_command(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "warehouse.toml"
    config.parent.mkdir()
    config.write_text("[transform]\ninterval = 5\n")
    env = cli_env(Settings(data_dir=tmp_path / "data", kafka={"bootstrap_servers": "127.0.0.1:1"}))
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "--log-format", "text", "--config", str(config), "transform"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        f"{config}: transform.interval: no such setting; did you mean transform.interval_s?" in result.stderr
    )


def test_one_answering_bootstrap_server_is_enough(kafka_bootstrap: str) -> None:
    closed = f"127.0.0.1:{closed_port()}"
    check_kafka(Settings(kafka={"bootstrap_servers": f"{closed},PLAINTEXT://{kafka_bootstrap}"}))
    other = f"127.0.0.1:{closed_port()}"
    with pytest.raises(InfrastructureError) as info:
        check_kafka(Settings(kafka={"bootstrap_servers": f"{closed},{other}"}))
    assert str(info.value).startswith(f"kafka.bootstrap_servers: no broker reachable ({closed}: ")
    assert f"; {other}: " in str(info.value)
