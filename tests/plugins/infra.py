"""Pytest plugin: the real broker and PostgreSQL the integration and e2e tests run against.

- Kafka: ``CDCWH_TEST_KAFKA_BOOTSTRAP`` when set, else the embedded broker (Tansu), one per test session.
- PostgreSQL: ``CDCWH_TEST_POSTGRES_DSN`` when set (a fresh database is created on that server for the
  session and dropped after), else the embedded Postgres (pgserver), one per test session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from cdcwh.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.plugins.secrets import with_canary_password


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker for this test session."""
    external = os.environ.get("CDCWH_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    base = tmp_path_factory.mktemp("broker")
    with EmbeddedBroker(base / "run", base / "logs") as broker:
        yield broker.address


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a fresh database on a real PostgreSQL for this test session, with the canary password of
    tests/plugins/secrets.py (checked for leaks at the end of the session)."""
    external = os.environ.get("CDCWH_TEST_POSTGRES_DSN")
    if not external:
        base = tmp_path_factory.mktemp("pg")
        with EmbeddedPostgres(base, base / "run") as postgres:
            yield with_canary_password(postgres.dsn)
        return
    name = f"cdcwh_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(external, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_canary_password(psycopg.conninfo.make_conninfo(external, dbname=name))
    try:
        yield dsn
    finally:
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def unique_prefix() -> str:
    """A topic prefix no other test uses, so tests sharing the session broker do not see each other."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name on the session's PostgreSQL that no other test uses, dropped after the test: one
    PostgreSQL per session (per xdist worker), a schema per test."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
