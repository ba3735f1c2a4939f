"""Shared fixtures: the real broker and PostgreSQL the integration and e2e tests run against.

- Kafka: ``CDCWH_TEST_KAFKA_BOOTSTRAP`` when set, else the embedded broker (Tansu), one per test session.
- PostgreSQL: ``CDCWH_TEST_POSTGRES_DSN`` when set (a fresh database is created on that server for the
  session and dropped after), else the embedded Postgres (pgserver), one per test session.

Tests under tests/integration and tests/e2e are marked ``integration`` / ``e2e`` automatically.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedBroker, EmbeddedPostgres


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


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
    """DSN of a fresh database on a real PostgreSQL for this test session."""
    external = os.environ.get("CDCWH_TEST_POSTGRES_DSN")
    if not external:
        base = tmp_path_factory.mktemp("pg")
        with EmbeddedPostgres(base, base / "run") as postgres:
            yield postgres.dsn
        return
    name = f"cdcwh_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(external, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(external, dbname=name)
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
def settings_factory(tmp_path: Path, kafka_bootstrap: str) -> Callable[..., Settings]:
    """Settings on a fresh data dir, pointed at the session broker; keyword arguments override."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "kafka": {"bootstrap_servers": kafka_bootstrap},
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def cli_env(tmp_path: Path, kafka_bootstrap: str) -> dict[str, str]:
    """Environment for running the ``cdcwh`` CLI as a subprocess against the session broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env["CDCWH_DATA_DIR"] = str(tmp_path / "data")
    env["CDCWH_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    return env
