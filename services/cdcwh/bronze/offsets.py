"""Landed offsets kept in Iceberg snapshot summaries: the bronze half of exactly-once.

Every append cdcwh makes to a bronze table carries, in the same commit, the property ``cdcwh.landed-offsets``:
a JSON object ``{"<topic>/<partition>": <highest landed offset>}`` for every partition ever landed in that
table (cumulative, not just this batch). The landed offsets of a table are therefore those of the newest
snapshot in its ancestry that has the property (snapshots written by other tools, such as compaction, are
passed over).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import pyarrow as pa
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

OFFSETS_PROPERTY = "cdcwh.landed-offsets"

TopicPartition = tuple[str, int]


def landed_offsets(table: Table) -> dict[TopicPartition, int]:
    """Highest landed offset per (topic, partition) as of the table's current snapshot."""
    current = table.current_snapshot()
    if current is None:
        return {}
    for snapshot in ancestors_of(current, table.metadata):
        if snapshot.summary is not None and OFFSETS_PROPERTY in snapshot.summary.additional_properties:
            return decode_offsets(snapshot.summary.additional_properties[OFFSETS_PROPERTY])
    return {}


def decode_offsets(text: str) -> dict[TopicPartition, int]:
    raw: dict[str, int] = json.loads(text)
    result = {}
    for name, offset in raw.items():
        topic, _, partition = name.rpartition("/")
        result[(topic, int(partition))] = int(offset)
    return result


def encode_offsets(offsets: Mapping[TopicPartition, int]) -> str:
    return json.dumps(
        {f"{topic}/{partition}": offset for (topic, partition), offset in sorted(offsets.items())}
    )


def merge_offsets(
    landed: Mapping[TopicPartition, int], new: Iterable[tuple[str, int, int]]
) -> dict[TopicPartition, int]:
    """The landed map advanced by (topic, partition, offset) triples."""
    merged = dict(landed)
    for topic, partition, offset in new:
        key = (topic, partition)
        if offset > merged.get(key, -1):
            merged[key] = offset
    return merged


def highest_offsets(rows: pa.Table) -> list[tuple[str, int, int]]:
    """(topic, partition, highest offset) of each partition in the rows."""
    top = rows.group_by(["__topic", "__partition"]).aggregate([("__offset", "max")])
    return list(
        zip(
            top.column("__topic").to_pylist(),
            top.column("__partition").to_pylist(),
            top.column("__offset_max").to_pylist(),
            strict=True,
        )
    )
