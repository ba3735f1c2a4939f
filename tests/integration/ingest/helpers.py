"""Shared helpers for the ingest tests: produce the shop workload, run ingest, read bronze."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from cdcwh.bronze.catalog import bronze_table_name, open_catalog
from cdcwh.config import Settings
from cdcwh.generate import KafkaRecord, ShopGenerator, SourceChange, encode, produce

TABLES = ("customers", "products", "orders", "order_items", "payments")


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
            "CDCWH_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "CDCWH_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
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


def run_ingest_until_caught_up(settings: Settings, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_cdcwh(settings, "ingest", "--until-caught-up", **extra)


def bronze(settings: Settings, topic: str) -> pa.Table:
    catalog = open_catalog(settings)
    return catalog.load_table((settings.iceberg.namespace, bronze_table_name(topic))).scan().to_arrow()


def quarantine(settings: Settings) -> pa.Table:
    return open_catalog(settings).load_table((settings.iceberg.namespace, "_quarantine")).scan().to_arrow()


def settings_for(base: Path, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=base,
        kafka={
            "bootstrap_servers": bootstrap,
            "topics": rf"^{prefix}\.[^.]+\.[^.]+$",
            "group_prefix": prefix,
            "gold_topic_prefix": f"{prefix}.gold",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
        },
        **overrides,
    )
