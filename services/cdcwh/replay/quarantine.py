"""``cdcwh replay quarantine``: re-ingest quarantined records after a fix (a contract relaxed, a bug fixed).

Every selected quarantine row is decoded again with today's code and contracts. Records that now pass are
appended to their bronze table at their original (topic, partition, offset) unless bronze already holds that
offset (so running it twice lands nothing twice); records that still fail stay in quarantine. Because the
re-ingested rows are older than what transform already applied, the affected silver tables are then rebuilt
from bronze (``replay rebuild``), which keeps per-key order and the SCD2 history right.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.config import Settings
from cdcwh.contracts import load_contracts
from cdcwh.core.envelope import decode_batch
from cdcwh.core.evolve import conform
from cdcwh.core.record import RawRecord
from cdcwh.ingest.bronze import INGESTED_AT, IcebergBronzeWriter, rows_ts_type
from cdcwh.ingest.catalog import QUARANTINE_TABLE, open_catalog
from cdcwh.ingest.service import make_writer

REPLAYED_PROPERTY = "cdcwh.replayed-quarantine"


def replay_quarantine(
    settings: Settings, *, reason: str | None = None, topic: str | None = None
) -> dict[str, object]:
    catalog = open_catalog(settings)
    table = catalog.load_table((settings.iceberg.namespace, QUARANTINE_TABLE))
    quarantined = table.scan().to_arrow()
    if reason:
        quarantined = quarantined.filter(pc.equal(quarantined["reason"], reason))
    if topic:
        quarantined = quarantined.filter(pc.equal(quarantined["topic"], topic))
    records = [
        RawRecord(r["topic"], r["partition"], r["offset"], None, r["key"], r["value"])
        for r in quarantined.to_pylist()
    ]
    # one record per offset (a DLQ re-delivery can never duplicate quarantine, but be strict)
    records = list({(r.topic, r.partition, r.offset): r for r in records}.values())
    contracts = load_contracts(settings.contracts_path)
    decoded = decode_batch(records, contracts, max_value_bytes=settings.ingest.max_value_bytes)
    by_position = {(r.topic, r.partition, r.offset): r for r in records}
    writer = make_writer(settings)
    landed: Counter[str] = Counter()
    already: Counter[str] = Counter()
    for source_topic, rows in decoded.tables.items():
        fresh = _not_in_bronze(writer, source_topic, rows)
        already[source_topic] += rows.num_rows - fresh.num_rows
        if fresh.num_rows:
            _append(writer, source_topic, fresh, by_position)
            landed[source_topic] += fresh.num_rows
    return {
        "selected": len(records),
        "landed": dict(landed),
        "already_in_bronze": dict(already),
        "still_rejected": dict(Counter(str(r.reason) for r in decoded.rejected)),
    }


def _not_in_bronze(writer: IcebergBronzeWriter, topic: str, rows: pa.Table) -> pa.Table:
    table = writer.table_for(topic, rows.schema)
    table.refresh()
    if table.current_snapshot() is None:
        return rows
    offsets = rows["__offset"].to_pylist()
    seen: set[tuple[int, int]] = set()
    for start in range(0, len(offsets), 1000):
        chunk = ", ".join(str(int(o)) for o in offsets[start : start + 1000])
        existing = table.scan(
            row_filter=f"__offset IN ({chunk})", selected_fields=("__partition", "__offset")
        ).to_arrow()
        seen |= set(zip(existing["__partition"].to_pylist(), existing["__offset"].to_pylist(), strict=True))
    keep = [(p, o) not in seen for p, o in zip(rows["__partition"].to_pylist(), offsets, strict=True)]
    return rows.filter(pa.array(keep))


def _append(
    writer: IcebergBronzeWriter,
    topic: str,
    rows: pa.Table,
    by_position: dict[tuple[str, int, int], RawRecord],
) -> None:
    """Append without touching the landed offsets (these offsets are below them by construction). Rows that
    still do not fit the table's schema are left in quarantine."""
    table = writer.table_for(topic, rows.schema)
    fitted, _still_conflicting = writer.fit_schema(table, rows, topic, by_position)
    if fitted.num_rows == 0:
        return
    now = datetime.now(UTC)
    fitted = fitted.append_column(INGESTED_AT, pa.array([now] * fitted.num_rows, rows_ts_type()))
    table.append(conform(fitted, table.schema().as_arrow()), snapshot_properties={REPLAYED_PROPERTY: "true"})
