"""Incremental reads of bronze: the rows landed since the last micro-batch.

The transform watermark is, per (topic, partition), the highest Kafka offset already applied. Bronze holds
every offset exactly once (docs/bronze.md), so "new rows" are those above the watermark and at or below the
table's landed offsets at the snapshot being read. Iceberg prunes data files by the ``__offset`` column
statistics, and the snapshot is pinned, so appends made during the read are left for the next batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThan, LessThanOrEqual, Or
from pyiceberg.table import Table

from cdcwh.ingest.catalog import QUARANTINE_TABLE, TOPIC_PROPERTY
from cdcwh.ingest.offsets import TopicPartition, landed_offsets


@dataclass(frozen=True)
class BronzeSlice:
    """New rows of one bronze table and the watermark they advance to."""

    topic: str
    table: str
    rows: pa.Table
    upper: dict[TopicPartition, int]


def bronze_tables(catalog: Catalog, namespace: str) -> dict[str, Table]:
    """Bronze tables by topic (the quarantine table is not one)."""
    tables = {}
    for identifier in catalog.list_tables(namespace):
        if identifier[-1] == QUARANTINE_TABLE:
            continue
        table = catalog.load_table(identifier)
        topic = table.properties.get(TOPIC_PROPERTY)
        if topic:
            tables[topic] = table
    return tables


def read_new_rows(
    table: Table, topic: str, watermarks: Mapping[TopicPartition, int], max_offsets_per_partition: int
) -> BronzeSlice | None:
    """The rows above the watermarks (at most ``max_offsets_per_partition`` offsets per partition) at the
    table's current snapshot: pass it as just loaded (``bronze_tables``), it is not refreshed here."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    landed = landed_offsets(table)
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for tp, high in landed.items():
        low = watermarks.get(tp, -1)
        if high > low:
            ranges[tp] = (low, min(high, low + max_offsets_per_partition))
    if not ranges:
        return None
    # built as expressions, not as a string for pyiceberg to parse (its parser cost 4% of a busy transform)
    parts = [offset_range(partition, low, high) for (_, partition), (low, high) in sorted(ranges.items())]
    condition = reduce(lambda left, right: Or(left, right), parts)
    rows = table.scan(row_filter=condition, snapshot_id=snapshot.snapshot_id).to_arrow()
    upper = {tp: high for tp, (_, high) in ranges.items()}
    return BronzeSlice(topic=topic, table=table.name()[-1], rows=rows, upper=upper)


def offset_range(partition: int, low: int, high: int) -> BooleanExpression:
    """``__partition = partition AND __offset > low AND __offset <= high``."""
    # pyiceberg's predicates are pydantic models whose positional constructors mypy cannot see
    return And(
        EqualTo("__partition", partition),  # type: ignore[call-arg,arg-type]
        GreaterThan("__offset", low),  # type: ignore[call-arg,arg-type]
        LessThanOrEqual("__offset", high),  # type: ignore[call-arg,arg-type]
    )
