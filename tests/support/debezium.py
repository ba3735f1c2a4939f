"""The real Debezium output captured in tests/fixtures/debezium, as records, and bronze tables read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.core.record import RawRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"


def captured(name: str) -> list[RawRecord]:
    """The fixture's records in the order the engine gave them, as offsets of partition 0."""
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()[1:]  # line 1 is the capture's header
    records = []
    for offset, line in enumerate(lines):
        item = json.loads(line)
        key, value = item["key"], item["value"]
        records.append(
            RawRecord(
                item["topic"],
                0,
                offset,
                1_700_000_000_000 + offset,
                None if key is None else key.encode(),
                None if value is None else value.encode(),
            )
        )
    return records


def table_rows(settings: Settings, name: str) -> pa.Table:
    catalog = open_catalog(settings)
    return catalog.load_table((settings.iceberg.namespace, name)).scan().to_arrow()


def by_id(rows: pa.Table) -> dict[int, dict[str, Any]]:
    data = rows.filter(pc.is_valid(rows["id"]))
    return {row["id"]: row for row in data.to_pylist() if row["__op"] in ("r", "c")}
