"""Drive generator -> broker -> ingest -> transform, and read silver and gold from the DuckDB file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from cdcwh.config import PROJECT_ROOT, Settings
from cdcwh.generate import KafkaRecord, SourceChange, encode, produce
from cdcwh.models import load_models
from tests.support.pipeline import env_overrides, run_ingest_until_caught_up
from tests.support.services import transform_once

# every gold model, in dependency order
MARTS = tuple(model.name for model in load_models(PROJECT_ROOT / "sql" / "gold"))


def produce_changes(bootstrap: str, prefix: str, changes: list[SourceChange], partitions: int = 3) -> None:
    records: list[KafkaRecord] = [r for c in changes for r in encode(c, prefix=prefix)]
    produce(records, producer_config={"bootstrap.servers": bootstrap}, partitions=partitions)


def run_transform_once(settings: Settings, **extra: str) -> None:
    """``cdcwh transform --once`` in-process; ``extra`` as ``CDCWH_*`` names, like the CLI's."""
    transform_once(env_overrides(settings, **extra))


def ingest_and_transform(settings: Settings) -> None:
    run_ingest_until_caught_up(settings)
    run_transform_once(settings)


def read_marts(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect(str(Path(settings.data_dir) / "warehouse.duckdb"), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        marts = {}
        for mart in MARTS:
            marts[mart] = con.sql(f"SELECT * FROM gold.{mart}").to_arrow_table().to_pylist()
        return marts
    finally:
        con.close()


def read_silver(settings: Settings, table: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(Path(settings.data_dir) / "warehouse.duckdb"), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        sql = f"SELECT * EXCLUDE (__op, __source_ts, __lsn, __seq) FROM silver.{table}"
        rows: list[dict[str, Any]] = con.sql(sql).to_arrow_table().to_pylist()
        return rows
    finally:
        con.close()
