"""Shared helpers for the integration and e2e tests: settings for a test, produce the shop workload, run a
service (in-process, tests.support.services) or the ``cdcwh`` CLI (a subprocess), read bronze."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.config import ENV_PREFIX, AuditSettings, KafkaSettings, Settings
from cdcwh.generate import KafkaRecord, ShopGenerator, SourceChange, encode, produce
from tests.support.services import ingest_until_caught_up, sink_until_caught_up

TABLES = ("customers", "products", "orders", "order_items", "payments")
# The embedded broker holds a consumer-group join for about half the session timeout, and a killed member
# stays in the group for all of it: the services' 6 s default made every run of a consuming service wait
# about 3 s to join. 2 s (4 heartbeats) is still far above what a test machine's scheduling delays.
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_MS = 500


def produce_shop(
    bootstrap: str, prefix: str, events: int, seed: int
) -> tuple[ShopGenerator, list[SourceChange]]:
    """Produce a shop workload with simulated source times; returns the generator and its changes."""
    generator = ShopGenerator(seed)
    changes = list(generator.changes(events))
    records: list[KafkaRecord] = [r for c in changes for r in encode(c, prefix=prefix)]
    produce(records, producer_config={"bootstrap.servers": bootstrap}, partitions=3)
    return generator, changes


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
    env.update(
        {
            "CDCWH_DATA_DIR": str(settings.data_dir),
            "CDCWH_KAFKA__BOOTSTRAP_SERVERS": str(settings.kafka.bootstrap_servers),
            "CDCWH_KAFKA__TOPICS": settings.kafka.topics,
            "CDCWH_KAFKA__GROUP_PREFIX": settings.kafka.group_prefix,
            "CDCWH_KAFKA__GOLD_TOPIC_PREFIX": settings.kafka.gold_topic_prefix,
            "CDCWH_METRICS__PORT": "0",
            "CDCWH_KAFKA__SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms or SESSION_TIMEOUT_MS),
            "CDCWH_KAFKA__HEARTBEAT_INTERVAL_MS": str(settings.kafka.heartbeat_interval_ms or HEARTBEAT_MS),
            "CDCWH_AUDIT__ENABLED": str(bool(settings.audit.enabled)).lower(),
            "CDCWH_POSTGRES__AUDIT_SCHEMA": settings.postgres.audit_schema,
        }
    )
    env.update(extra)
    return env


def run_cdcwh(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``cdcwh ARGS`` for these settings (extra environment variables as keywords); it must exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "cdcwh.cli", *args],
        env=cli_env(settings, **extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_ingest_until_caught_up(settings: Settings, **extra: str) -> None:
    """``cdcwh ingest --until-caught-up`` in-process; ``extra`` as ``CDCWH_*`` names, like the CLI's."""
    ingest_until_caught_up(env_overrides(settings, **extra))


def run_sink_until_caught_up(settings: Settings, **extra: str) -> None:
    """``cdcwh sink --until-caught-up`` in-process; ``extra`` as ``CDCWH_*`` names, like the CLI's."""
    sink_until_caught_up(env_overrides(settings, **extra))


def env_overrides(settings: Settings, **extra: str) -> Settings:
    """``settings`` with ``CDCWH_FIELD`` / ``CDCWH_SECTION__FIELD`` values applied, as in the environment."""
    values = settings.model_dump(by_alias=True)
    for name, value in extra.items():
        section, _, field = name.removeprefix(ENV_PREFIX).lower().partition("__")
        if field:
            values[section] = {**values[section], field: value}
        else:
            values[section] = value
    return Settings(**values)


def bronze(settings: Settings, topic: str) -> pa.Table:
    catalog = open_catalog(settings)
    return catalog.load_table((settings.iceberg.namespace, bronze_table_name(topic))).scan().to_arrow()


def quarantine(settings: Settings) -> pa.Table:
    return open_catalog(settings).load_table((settings.iceberg.namespace, "_quarantine")).scan().to_arrow()


def settings_for(base: Path, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topics=rf"^{prefix}\.[^.]+\.[^.]+$",
        group_prefix=prefix,
        gold_topic_prefix=f"{prefix}.gold",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )
    # the audit schema is shared by every test of a session's PostgreSQL: on only where a test names its own
    overrides.setdefault("audit", AuditSettings(enabled=False))
    return Settings(data_dir=base, kafka=kafka, **overrides)
