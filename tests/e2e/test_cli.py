"""The commands a user types, end to end on their own embedded services: broker and postgres in the
background, generate, run --until-caught-up, status, query; and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from tests.support import cli
from tests.support.cli import cdcwh
from tests.support.ports import free_base_port

__all__ = ["free_base_port"]  # tests/integration/deploy/test_prometheus_scrape.py imports it from here


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    return cli.user_env(tmp_path / "data")


@pytest.fixture
def background_services(user_env: dict[str, str]) -> Iterator[Settings]:
    with cli.background_services(user_env) as settings:
        yield settings


def test_generate_run_status_query(user_env: dict[str, str], background_services: Settings) -> None:
    cdcwh(user_env, "generate", "--events", "1500", "--seed", "4")
    cdcwh(user_env, "run", "--until-caught-up")
    with psycopg.connect(postgres_dsn(background_services)) as conn:
        pg_orders = conn.execute("SELECT count(*) FROM marts.orders").fetchall()[0][0]
    assert pg_orders > 0
    query = cdcwh(user_env, "query", "SELECT count(*) AS n FROM gold.orders", "--format", "json")
    assert json.loads(query.stdout)["rows"] == [[pg_orders]]
    status = json.loads(cdcwh(user_env, "status", "--format", "json").stdout)  # exit 0: healthy
    assert status["health"] == {"code": 0, "state": "healthy", "problems": []}
    # every partition is fully in silver, every gold change in PostgreSQL
    source = {(s["topic"], s["partition"]): s for s in status["source"]}
    assert ("shop.public.orders", 0) in source and all(s["behind"] == 0 for s in source.values()), source
    assert status["sink"] and all(s["behind"] == 0 for s in status["sink"]), status["sink"]
    assert status["batches"] and {m["name"] for m in status["marts"]} >= {"orders", "daily_revenue"}


def test_commands_that_need_a_service_say_how_to_start_it(user_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", "ingest", "--until-caught-up"],
        env=user_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cdcwh broker" in result.stderr


def test_demo_finishes_with_the_marts_in_postgres(user_env: dict[str, str]) -> None:
    result = cdcwh(user_env, "demo", "--source", "simulator", "--events", "1500", timeout=600)
    out = result.stdout
    assert "rows per layer" in out
    assert "marts.daily_revenue" in out
    # closing lines that are true: its PostgreSQL stops with it, so no psql string, but how to keep it up
    assert "psql 'postgresql://" not in out and "cdcwh demo --keep-running" in out
    assert "tombstone" in out  # why bronze holds more rows than there are changes
    assert "does not match" not in out + result.stderr
