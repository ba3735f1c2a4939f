"""Secrets never reach a log line, ``cdcwh status`` or an error: the pipeline (ingest, transform, sink) runs
in-process with every secret setting holding a canary of tests/plugins/secrets.py (the Postgres password is
in the session's DSN; the SASL password, registry credentials and source DSN are set but not used by the
plaintext broker and JSON topics), then ``cdcwh status`` and failing connections run with the same settings;
every log record, output and exception text is searched for the canaries."""

from __future__ import annotations

import json
import logging
import socket
import traceback
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from cdcwh import redaction
from cdcwh.cli import main
from cdcwh.config import PostgresSettings
from tests.plugins.secrets import (
    CANARIES,
    PG_PASSWORD,
    REGISTRY_PASSWORD,
    SASL_PASSWORD,
    SOURCE_PASSWORD,
)
from tests.support.pipeline import cli_env, produce_shop, settings_for
from tests.support.services import ingest_until_caught_up, sink_until_caught_up, transform_once


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leaked(*texts: str) -> list[str]:
    return [canary for canary in CANARIES if any(canary in text for text in texts)]


def files_with_canaries(root: Path) -> list[str]:
    needles = [c.encode() for c in CANARIES]
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and any(n in p.read_bytes() for n in needles)
    ]


def test_no_secret_in_logs_status_or_errors(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert psycopg.conninfo.conninfo_to_dict(postgres_dsn)["password"] == PG_PASSWORD
    prefix = f"t{uuid.uuid4().hex[:8]}"
    schema = f"marts_{prefix}"
    settings = settings_for(
        tmp_path / "data",
        kafka_bootstrap,
        prefix,
        postgres=PostgresSettings(dsn=SecretStr(postgres_dsn), schema=schema),
        schema_registry={"basic_auth": SecretStr(f"registry-user:{REGISTRY_PASSWORD}")},
        source={"dsn": SecretStr(f"postgresql://shop:{SOURCE_PASSWORD}@127.0.0.1:{closed_port()}/shop")},
    )
    settings.kafka.sasl_password = SecretStr(SASL_PASSWORD)
    caplog.set_level(logging.DEBUG, logger="cdcwh")
    produce_shop(kafka_bootstrap, prefix, events=60, seed=21)
    ingest_until_caught_up(settings)
    transform_once(settings)
    sink_until_caught_up(settings)
    with psycopg.connect(postgres_dsn) as conn:  # the sink wrote with the DSN that holds the password
        orders = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "orders")))
        assert orders.fetchall()[0][0] > 0

    env = cli_env(
        settings,
        CDCWH_POSTGRES__DSN=postgres_dsn,
        CDCWH_POSTGRES__SCHEMA=schema,
        CDCWH_KAFKA__SASL_PASSWORD=SASL_PASSWORD,
        CDCWH_SCHEMA_REGISTRY__BASIC_AUTH=f"registry-user:{REGISTRY_PASSWORD}",
        CDCWH_SOURCE__DSN=settings.source.dsn.get_secret_value() if settings.source.dsn else "",
        CDCWH_LOG_FORMAT="text",
    )
    for name in [n for n in env if n.startswith("CDCWH_")]:
        monkeypatch.setenv(name, env[name])
    outputs: list[str] = []
    try:
        for fmt in ("json", "table"):
            main(["status", "--format", fmt])
            captured = capsys.readouterr()
            outputs += [captured.out, captured.err]
        parts = {p["name"]: p for p in json.loads(outputs[0])["parts"]}
        assert parts["postgres"]["reachable"] is True  # status did connect with the DSN holding a password

        # a connection that fails: a closed port, then a DSN that does not parse (libpq's own message for
        # this one is 'missing "=" after "<the canary>"')
        wrong = f"postgresql://cdcwh:{PG_PASSWORD}@127.0.0.1:{closed_port()}/warehouse"
        monkeypatch.setenv("CDCWH_POSTGRES__DSN", wrong)
        assert main(["sink"]) == 2
        main(["status", "--format", "json"])
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
        parts = {p["name"]: p for p in json.loads(captured.out)["parts"]}
        assert parts["postgres"]["reachable"] is False and "127.0.0.1" in parts["postgres"]["error"]
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(wrong, connect_timeout=5)
        monkeypatch.setenv("CDCWH_POSTGRES__DSN", f"host=127.0.0.1 password=x {PG_PASSWORD}")
        assert main(["sink"]) == 2
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
    finally:
        redaction.forget_secrets()  # what main() registered
    assert "postgres.dsn: cannot connect to the database" in outputs[-3]
    assert "CDCWH_POSTGRES__DSN" in outputs[-1] and "not a libpq connection string" in outputs[-1]
    exception_text = "".join(traceback.format_exception(refused.value))
    assert not leaked(*outputs, exception_text, caplog.text), leaked(*outputs, exception_text, caplog.text)
    assert len(caplog.records) > 10  # the services did log
    assert files_with_canaries(tmp_path) == []
