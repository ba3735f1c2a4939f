"""Encryption in transit to PostgreSQL: ``sslmode``/``sslrootcert`` in a DSN reach libpq as they are.

Against a real PostgreSQL started with a self-signed CA and ``ssl = on`` (tests/support/tls_postgres.py),
which rejects plain connections: ``verify-full`` with the right CA connects over TLS, with another CA it
fails, and cdcwh's own paths (``init-roles`` with passwords, the sink's start and preflight, ``status``)
work over it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcwh.cli import main
from cdcwh.config import PROJECT_ROOT
from cdcwh.goldfeed import decode, encode
from cdcwh.overview.status import _postgres as status_marts
from cdcwh.sink.postgres import PostgresMartSink
from tests.support.pipeline import env_overrides, settings_for
from tests.support.tls_postgres import BINDIR_ENV, TlsPostgres, ssl_binaries, tls_postgres


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPostgres]:
    binaries = ssl_binaries()
    if binaries is None:
        pytest.skip(
            f"no PostgreSQL server binaries built with OpenSSL (the pgserver wheel's are not): install "
            f"Debian's postgresql package or set {BINDIR_ENV}"
        )
    with tls_postgres(tmp_path_factory.mktemp("tlspg"), binaries) as server:
        yield server


def test_verify_full_with_the_right_ca_connects_over_tls(tls_server: TlsPostgres) -> None:
    for host in ("localhost", "127.0.0.1"):  # the certificate names both
        with psycopg.connect(tls_server.dsn(host=host)) as conn:
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            assert row is not None
            assert row[0] is True
            assert str(row[1]).startswith("TLSv1.")


def test_verify_full_with_another_ca_fails(tls_server: TlsPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(tls_server.dsn(ca=tls_server.wrong_ca), connect_timeout=5)


def test_the_server_refuses_plain_connections(tls_server: TlsPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(tls_server.dsn(sslmode="disable"), connect_timeout=5)


def test_roles_passwords_sink_and_status_over_verify_full(
    tls_server: TlsPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    prefix, marts, audit = f"r{tag}_", f"m_{tag}", f"a_{tag}"
    passwords = {purpose: uuid.uuid4().hex for purpose in ("owner", "sink", "reader")}
    monkeypatch.setenv("CDCWH_POSTGRES__DSN", tls_server.dsn())
    monkeypatch.setenv("CDCWH_POSTGRES__SCHEMA", marts)
    monkeypatch.setenv("CDCWH_POSTGRES__AUDIT_SCHEMA", audit)
    flags = []
    for purpose, password in passwords.items():
        monkeypatch.setenv(f"TEST_PG_{purpose.upper()}", password)
        flags += ["--password-env", f"{purpose}=TEST_PG_{purpose.upper()}"]
    assert main(["postgres", "init-roles", "--role-prefix", prefix, *flags]) == 0

    def dsn(purpose: str, password: str | None = None) -> str:
        return tls_server.dsn(user=f"{prefix}{purpose}", password=password or passwords[purpose])

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn("sink", password="not-" + passwords["sink"]), connect_timeout=5)
    sink = PostgresMartSink(dsn("sink"), marts, PROJECT_ROOT / "sql", owner_dsn=dsn("owner"))
    try:
        conn = sink.connect()  # the owner's DDL, then the sink role's preflight, both over verify-full
        ssl = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl == (True,)
        row = {"customer_id": 1, "first_name": "Ada", "last_name": "L", "email": "ada@example.com",
               "segment": "retail", "first_order_date": None, "most_recent_order_date": None,
               "number_of_orders": 0, "lifetime_value": "0.00"}  # fmt: skip
        key = json.dumps({"customer_id": 1})
        value = encode(
            mart="customers", op="upsert", version=1, source_ts_ms=None, key=key, row=json.dumps(row)
        )
        result = sink.apply([decode(key.encode(), value)])
        assert result.upserts == {"customers": 1}
    finally:
        sink.close()
    settings = env_overrides(
        settings_for(tmp_path / "data", "127.0.0.1:1", f"t{tag}"),
        CDCWH_POSTGRES__DSN=dsn("reader"),
        CDCWH_POSTGRES__SCHEMA=marts,
    )
    assert {mart.name: mart.rows for mart in status_marts(settings)}["customers"] == 1
