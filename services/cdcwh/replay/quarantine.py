"""``cdcwh replay quarantine``: re-ingest quarantined records after a fix (a contract relaxed, a bug fixed).

Every selected quarantine row is decoded again with today's code and contracts. Records that now pass are
appended to their bronze table at their original (topic, partition, offset) unless bronze already holds that
offset (so running it twice lands nothing twice); records that still fail stay in quarantine. A record above
the table's landed offset (quarantined at the tail of its partition) advances the landed offset in the same
commit, so transform reads it; that is done only once the ingest group has committed past it, so that no
record below it can still be on its way to bronze (it would then be taken for already landed). Because the
re-ingested rows are older than what transform already applied, the affected silver tables are then rebuilt
from bronze (``replay rebuild``), which keeps per-key order and the SCD2 history right.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_table_name, open_catalog
from cdcwh.bronze.incarnation import log_marks
from cdcwh.bronze.offsets import OFFSETS_PROPERTY, encode_offsets, landed_offsets, merge_offsets
from cdcwh.config import Settings
from cdcwh.contracts import load_contracts
from cdcwh.core.envelope import decode_batch
from cdcwh.core.evolve import conform
from cdcwh.core.record import RawRecord
from cdcwh.errors import InfrastructureError
from cdcwh.ingest.bronze import INGESTED_AT, IcebergBronzeWriter, rows_ts_type
from cdcwh.ingest.service import ingest_group, make_writer
from cdcwh.kafka import client_config

REPLAYED_PROPERTY = "cdcwh.replayed-quarantine"
AWAITING_INGEST = "awaiting_ingest"
"""``still_rejected`` reason of a record above bronze's landed offset that ingest has not committed past."""
COMMIT_ATTEMPTS = 10


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
    writer = make_writer(settings)
    decoded = decode_batch(  # Avro records with the writer schemas the registry has now
        records,
        contracts,
        max_value_bytes=settings.ingest.max_value_bytes,
        writer_schemas=writer.writer_schemas(records),
    )
    landed: Counter[str] = Counter()
    already: Counter[str] = Counter()
    still_rejected = Counter(str(r.reason) for r in decoded.rejected)
    for source_topic, rows in decoded.tables.items():
        fresh = _not_in_bronze(writer, source_topic, rows)
        already[source_topic] += rows.num_rows - fresh.num_rows
        if fresh.num_rows:
            appended, awaiting = _append(settings, writer, source_topic, fresh, records)
            if appended:
                landed[source_topic] += appended
            if awaiting:
                still_rejected[AWAITING_INGEST] += awaiting
    return {
        "selected": len(records),
        "landed": dict(landed),
        "already_in_bronze": dict(already),
        "still_rejected": dict(still_rejected),
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
    settings: Settings,
    writer: IcebergBronzeWriter,
    topic: str,
    rows: pa.Table,
    records: list[RawRecord],
) -> tuple[int, int]:
    """Append the rows; returns how many were appended and how many wait for ingest to commit past them.
    Rows that still do not fit the table's schema are left in quarantine."""
    table = writer.table_for(topic, rows.schema)
    fitted, _still_conflicting = writer.fit_schema(table, rows, topic, records)
    if fitted.num_rows == 0:
        return 0, 0
    now = datetime.now(UTC)
    fitted = fitted.append_column(INGESTED_AT, pa.array([now] * fitted.num_rows, rows_ts_type()))
    partitions = fitted["__partition"].to_pylist()
    offsets = fitted["__offset"].to_pylist()
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table.refresh()
        landed = landed_offsets(table)
        above = [o > landed.get((topic, p), -1) for p, o in zip(partitions, offsets, strict=True)]
        properties = {REPLAYED_PROPERTY: "true"}
        ready = fitted
        if any(above):
            # above the landed offsets: only what ingest has committed past (its next offset to read),
            # and the landed offsets advance in the same commit so that transform reads these rows
            waiting = {p for p, a in zip(partitions, above, strict=True) if a}
            # Kafka's committed offsets count in the partition's current log; bronze's __offset adds the
            # log incarnation's base (0 unless the log was reset)
            marks = log_marks(table)
            committed = {
                p: offset + (marks[(topic, p)].base if (topic, p) in marks else 0)
                for p, offset in _ingest_committed(settings, topic, waiting).items()
            }
            keep = [
                not a or o < committed.get(p, -1) for p, o, a in zip(partitions, offsets, above, strict=True)
            ]
            ready = fitted.filter(pa.array(keep))
            kept = ((topic, p, o) for p, o, k in zip(partitions, offsets, keep, strict=True) if k)
            properties[OFFSETS_PROPERTY] = encode_offsets(merge_offsets(landed, kept))
        if ready.num_rows == 0:
            return 0, fitted.num_rows
        try:
            table.append(conform(ready, table.schema().as_arrow()), snapshot_properties=properties)
        except CommitFailedException:  # ingest committed meanwhile: re-read the landed offsets
            time.sleep(0.05 * attempt)
            continue
        return ready.num_rows, fitted.num_rows - ready.num_rows
    raise InfrastructureError(f"could not append the replayed quarantine rows of {topic} to bronze")


def _ingest_committed(settings: Settings, topic: str, partitions: set[int]) -> dict[int, int]:
    """The ingest group's committed offset per partition (absent when it has none)."""
    consumer = Consumer(
        {**client_config(settings), "group.id": ingest_group(settings), "enable.auto.commit": False}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in sorted(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed if tp.error is None and tp.offset >= 0}


def reingested(catalog: Catalog, namespace: str, quarantined: pa.Table) -> set[tuple[str, int, int]]:
    """The (topic, partition, offset) of quarantined records that bronze now holds (``replay quarantine``
    landed them): the rest are still outstanding."""
    found: set[tuple[str, int, int]] = set()
    for topic in sorted(set(quarantined["topic"].to_pylist())):
        try:
            table = catalog.load_table((namespace, bronze_table_name(topic)))
        except NoSuchTableError:
            continue
        if table.current_snapshot() is None:
            continue
        mine = quarantined.filter(pc.equal(quarantined["topic"], topic))
        offsets = sorted(set(mine["offset"].to_pylist()))
        for start in range(0, len(offsets), 1000):
            chunk = ", ".join(str(int(o)) for o in offsets[start : start + 1000])
            rows = table.scan(
                row_filter=f"__offset IN ({chunk})", selected_fields=("__partition", "__offset")
            ).to_arrow()
            found |= {
                (topic, p, o)
                for p, o in zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True)
            }
    wanted = set(
        zip(
            quarantined["topic"].to_pylist(),
            quarantined["partition"].to_pylist(),
            quarantined["offset"].to_pylist(),
            strict=True,
        )
    )
    return found & wanted  # the IN filter matched offsets of every partition
