"""``IcebergBronzeWriter``: lands one batch of Kafka records in the bronze tables, exactly once.

Commit order for one batch (the ingest checkpoint calls ``land`` and only then commits Kafka offsets):

0. Place the batch in its partitions' log incarnations (``bronze/incarnation.py``): a record at or below
   what was landed is checked against the log mark, and a new incarnation of the log gets offsets above
   everything landed, so that it is landed rather than skipped. From here on ``offset`` means
   bronze's ``__offset``.
1. Decode and validate the whole batch in ``cdcwh.core`` (pure): good rows per topic, rejections.
2. Check each topic's rows against its bronze table's schema: new columns and allowed widenings evolve the
   table (union by name); rows with a value in a column whose type cannot be widened become rejections.
3. Publish the rejections to ``<topic>.dlq`` and wait for delivery (at least once).
4. Append the rejections not yet landed to ``bronze._quarantine``; the same commit's snapshot summary
   advances that table's landed offsets and log marks.
5. For each bronze table: re-read its landed offsets from the current snapshot, drop rows at or below them
   (redelivered after a crash, or replayed), append the rest with the advanced offsets and log marks in the
   same commit.
   A concurrent commit makes the append fail; it is retried from the re-read.
6. Return; the caller commits the Kafka offsets.

A crash anywhere before 6 redelivers the batch from the last committed Kafka offsets, and step 4/5 skip what
is already landed, so every offset is in bronze (or in quarantine) exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import StructType

from cdcwh import metrics
from cdcwh.bronze.catalog import QUARANTINE_TABLE, TOPIC_PROPERTY, bronze_table_name
from cdcwh.bronze.incarnation import (
    MARKS_PROPERTY,
    IncarnationTracker,
    LogMark,
    RecordProbe,
    Reset,
    TopicPartition,
    encode_marks,
    log_marks,
    newer,
)
from cdcwh.bronze.offsets import (
    OFFSETS_PROPERTY,
    encode_offsets,
    highest_offsets,
    landed_offsets,
    merge_offsets,
)
from cdcwh.core.avro import WriterSchemas, schema_ids
from cdcwh.core.contract import TableContract
from cdcwh.core.envelope import decode_batch
from cdcwh.core.evolve import conform, plan_evolution
from cdcwh.core.record import RawRecord, Rejection, RejectReason
from cdcwh.errors import InfrastructureError
from cdcwh.ingest.maintenance import MERGE_PROPERTIES, ensure_properties
from cdcwh.ingest.quarantine import KafkaDeadLetterPublisher, quarantine_rows
from cdcwh.schema_registry import NOT_CONFIGURED, RegistrySchemas

log = logging.getLogger(__name__)

INGESTED_AT = "__ingested_at"
# What a row's values can make the Arrow -> Parquet -> Iceberg write raise (a conversion, a statistic out of
# range); an append failing with one of these is narrowed down to its rows (``_isolate``). Anything else (the
# catalog, the file system) is not about the data and fails the batch, which is redelivered.
DATA_ERRORS: tuple[type[Exception], ...] = (pa.ArrowException, OverflowError, ValueError, TypeError)
COMMIT_ATTEMPTS = 5
# every commit writes a new metadata file: keep the last 10 and delete older ones as Iceberg commits; and
# merge manifests on append (maintenance.py)
METADATA_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "10",
    **MERGE_PROPERTIES,
}


@dataclass
class LandResult:
    """What one ``land`` call did, per topic."""

    landed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    quarantined: list[Rejection] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    """Every rejection of the batch: ``quarantined`` and those a previous try already quarantined (a batch
    consumed again after a crash), for the audit's ``bad_records`` (deduplicated there by key)."""
    source_ts: dict[str, pa.Array] = field(default_factory=dict)
    resets: list[Reset] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    """Records skipped by design, per topic (a keyless table's tombstones; ``cdcwh_events_ignored_total``)."""


class IcebergBronzeWriter:
    """Appends decoded change events to ``<namespace>.<table>``, rejections to ``<namespace>._quarantine``."""

    def __init__(
        self,
        catalog: Catalog,
        namespace: str,
        contracts: Mapping[str, TableContract],
        *,
        max_value_bytes: int,
        dead_letters: KafkaDeadLetterPublisher | None = None,
        snapshots_kept: int = 20,
        probe: RecordProbe | None = None,
        registry: RegistrySchemas | None = None,
    ) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.contracts = contracts
        self.max_value_bytes = max_value_bytes
        self.dead_letters = dead_letters
        self.snapshots_kept = snapshots_kept
        self._tables: dict[str, Table] = {}
        self.incarnations = IncarnationTracker(probe)
        self.registry = registry

    def writer_schemas(self, records: Sequence[RawRecord]) -> WriterSchemas:
        """The Avro writer schemas the batch refers to; raises ``TransientError`` (before anything is
        landed) while the registry cannot be asked."""
        ids = schema_ids(records)
        if not ids:
            return WriterSchemas()
        if self.registry is None:
            return WriterSchemas(unavailable=NOT_CONFIGURED)
        return self.registry.writer_schemas(ids)

    def close(self) -> None:
        """Release the broker connection the record probe may hold (the writer can be used again)."""
        if self.incarnations.probe is not None:
            self.incarnations.probe.close()

    def land(self, records: Sequence[RawRecord]) -> LandResult:
        result = LandResult()
        if not records:
            return result
        writer_schemas = self.writer_schemas(records)  # first: a registry outage must change nothing
        records, result.resets = self.incarnations.place(records, self._known)
        self.incarnations.advance(records)
        decoded = decode_batch(
            records,
            self.contracts,
            max_value_bytes=self.max_value_bytes,
            schemas=self._existing_schemas({r.topic for r in records}),
            writer_schemas=writer_schemas,
        )
        rejections = list(decoded.rejected)
        for ignored in decoded.ignored:
            result.ignored[ignored.topic] = result.ignored.get(ignored.topic, 0) + 1
            metrics.EVENTS_IGNORED.labels(ignored.topic, str(ignored.reason)).inc()
        now = datetime.now(UTC)
        staged: dict[str, pa.Table] = {}
        for topic, rows in decoded.tables.items():
            table = self.table_for(topic, rows.schema)
            rows, conflicts = self.fit_schema(table, rows, topic, records)
            rejections.extend(conflicts)
            if rows.num_rows:
                staged[topic] = rows.append_column(
                    INGESTED_AT, pa.repeat(pa.scalar(now, rows_ts_type()), rows.num_rows)
                )
        result.quarantined = self._reject(rejections, now)
        result.rejected = list(rejections)
        for topic, rows in staged.items():
            table = self.table_for(topic, rows.schema)
            try:
                landed, skipped = self._append(table, topic, rows)
            except DATA_ERRORS as exc:
                rows, unwritable = self._isolate(table, topic, rows, records, exc)
                result.quarantined.extend(self._reject(unwritable, now, late=True))
                result.rejected.extend(unwritable)
                landed, skipped = self._append(table, topic, rows)
            result.landed[topic] = landed.num_rows
            result.skipped[topic] = skipped
            if landed.num_rows:
                result.source_ts[topic] = landed.column("__source_ts").combine_chunks()
        return result

    def _known(self, tp: TopicPartition) -> tuple[LogMark | None, int]:
        """The persisted log mark and the highest landed ``__offset`` of a partition, over its bronze table
        and the quarantine table."""
        mark: LogMark | None = None
        landed = -1
        tables = [self._existing_table(tp[0]), self._existing_table(QUARANTINE_TABLE)]
        for table in tables:
            if table is not None:
                table.refresh()  # another writer (a replay) may have committed: rare, so read afresh
                mark = newer(mark, log_marks(table).get(tp))
                landed = max(landed, landed_offsets(table).get(tp, -1))
        return mark, landed

    def _marks_for(self, table: Table, topic: str | None) -> str:
        """The table's marks advanced by this writer's, partition by partition (the newer one wins)."""
        marks = log_marks(table)
        for tp, mark in self.incarnations.marks(topic).items():
            marks[tp] = newer(marks.get(tp), mark) or mark
        return encode_marks(marks)

    # -- tables ---------------------------------------------------------------------------------------

    def _existing_table(self, topic: str) -> Table | None:
        """A topic's bronze table (or, for QUARANTINE_TABLE, the quarantine table) if it exists."""
        table = self._tables.get(topic)
        if table is None:
            name = QUARANTINE_TABLE if topic == QUARANTINE_TABLE else bronze_table_name(topic)
            try:
                table = self.catalog.load_table((self.namespace, name))
            except NoSuchTableError:
                return None
            ensure_properties(table)  # tables made before manifest merging existed
            self._tables[topic] = table
        return table

    def _existing_schemas(self, topics: set[str]) -> dict[str, pa.Schema]:
        """Data schemas of the topics' bronze tables that exist, so that decoding judges a batch's schemas
        against the table rather than against whichever schema came first in the batch."""
        schemas = {}
        for topic in topics:
            table = self._existing_table(topic)
            if table is not None:
                schemas[topic] = data_schema(table)
        return schemas

    def table_for(self, topic: str, schema: pa.Schema) -> Table:
        table = self._tables.get(topic)
        if table is not None:
            return table
        identifier = (self.namespace, bronze_table_name(topic))
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            full = (
                schema
                if INGESTED_AT in schema.names
                else schema.append(pa.field(INGESTED_AT, rows_ts_type()))
            )
            try:
                table = self.catalog.create_table(
                    identifier, schema=full, properties={TOPIC_PROPERTY: topic, **METADATA_PROPERTIES}
                )
                with table.update_spec() as spec:
                    spec.add_field(INGESTED_AT, DayTransform(), "ingested_day")
                log.info("created bronze table %s.%s for %s", *identifier, topic)
            except TableAlreadyExistsError:
                table = self.catalog.load_table(identifier)
        owner = table.properties.get(TOPIC_PROPERTY)
        if owner is not None and owner != topic:
            raise InfrastructureError(
                f"bronze table {'.'.join(identifier)} belongs to topic {owner!r}, not {topic!r}: "
                f"two topics map to the same table name"
            )
        self._tables[topic] = table
        return table

    def fit_schema(
        self,
        table: Table,
        rows: pa.Table,
        topic: str,
        records: Sequence[RawRecord],
    ) -> tuple[pa.Table, list[Rejection]]:
        """Evolve the table for new columns and widenings; turn rows that cannot fit into rejections."""
        drop_empty_structs(table)
        existing = data_schema(table)
        plan = plan_evolution(existing, rows.schema)
        rejections: list[Rejection] = []
        if plan.incompatible:
            bad = pc.is_valid(rows.column(plan.incompatible[0]))
            for name in plan.incompatible[1:]:
                bad = pc.or_(bad, pc.is_valid(rows.column(name)))
            rejected = rows.filter(bad)
            columns = ", ".join(plan.incompatible)
            by_position = {(r.topic, r.partition, r.offset): r for r in records if r.topic == topic}
            for partition, offset in zip(
                rejected.column("__partition").to_pylist(),
                rejected.column("__offset").to_pylist(),
                strict=True,
            ):
                raw = by_position[(topic, partition, offset)]
                rejections.append(
                    Rejection(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        reason=RejectReason.SCHEMA_CONFLICT,
                        detail=f"column(s) {columns} changed to a type the bronze table cannot widen to",
                        key=raw.key,
                        value=raw.value,
                        timestamp_ms=raw.timestamp_ms,
                    )
                )
            rows = rows.filter(pc.invert(bad)).drop_columns(list(plan.incompatible))
        if not plan.target.equals(existing):
            with table.update_schema() as update:
                update.union_by_name(plan.target)
            log.info("evolved the bronze table of %s to %s", topic, plan.target)
        return conform(rows, data_schema(table)), rejections

    # -- rows the writer refuses ------------------------------------------------------------------------

    def _reject(self, rejections: list[Rejection], now: datetime, *, late: bool = False) -> list[Rejection]:
        """Dead letters first (at least once), then the quarantine table (exactly once).

        ``late``: rejections found after the batch's first quarantine commit (rows the writer refused), whose
        offsets may lie below the quarantine's landed offsets; they are checked one by one instead."""
        if self.dead_letters is not None:
            self.dead_letters.publish(rejections)
        return self._append_quarantine(rejections, now, late=late)

    def _isolate(
        self, table: Table, topic: str, rows: pa.Table, records: Sequence[RawRecord], error: Exception
    ) -> tuple[pa.Table, list[Rejection]]:
        """Narrow a failed append down to the rows that cannot be written: the rest, and those as rejections.

        Halves of the batch are written without a commit (an uncommitted Iceberg transaction: its files are
        left as orphans for the table's maintenance) until each failing part is one row. When no single row
        fails, or every row of several does, the error is not about the data, and it is raised again."""
        log.warning(
            "writing %d rows of %s to bronze failed (%s: %s); narrowing the batch to the rows at fault",
            rows.num_rows,
            topic,
            type(error).__name__,
            error,
        )
        target = table.schema().as_arrow()

        def writable(chunk: pa.Table) -> str | None:
            try:
                table.transaction().append(conform(chunk, target))
            except DATA_ERRORS as exc:
                return f"{type(exc).__name__}: {exc}"
            return None

        bad: dict[int, str] = {}
        pending = [(0, rows.num_rows)]
        while pending:
            low, high = pending.pop()
            why = writable(rows.slice(low, high - low))
            if why is None:
                continue
            if high - low == 1:
                bad[low] = why
            else:
                middle = (low + high) // 2
                pending.extend([(middle, high), (low, middle)])
        if not bad or (len(bad) == rows.num_rows > 1):
            raise error  # no single row, or every row: not about the data (a schema or library error)
        positions = {
            (p, o): i
            for i, (p, o) in enumerate(
                zip(rows["__partition"].to_pylist(), rows["__offset"].to_pylist(), strict=True)
            )
            if i in bad
        }
        rejections = [
            Rejection.of(record, RejectReason.UNWRITABLE, f"bronze write failed: {bad[index]}")
            for record in records
            if record.topic == topic
            and (index := positions.get((record.partition, record.offset))) is not None
        ]
        keep = pa.array([i not in bad for i in range(rows.num_rows)])
        return rows.filter(keep), rejections

    # -- appends --------------------------------------------------------------------------------------

    def _append(self, table: Table, topic: str, rows: pa.Table) -> tuple[pa.Table, int]:
        """Append the rows above the landed offsets, with the advanced offsets in the same commit."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table.refresh()
            landed = landed_offsets(table)
            fresh = drop_landed(rows, landed)
            skipped = rows.num_rows - fresh.num_rows
            if fresh.num_rows == 0:
                return fresh, skipped
            offsets = merge_offsets(landed, highest_offsets(fresh))
            try:
                table.append(
                    conform(fresh, table.schema().as_arrow()),
                    snapshot_properties={
                        OFFSETS_PROPERTY: encode_offsets(offsets),
                        MARKS_PROPERTY: self._marks_for(table, topic),
                    },
                )
                expire_snapshots(table, self.snapshots_kept)
                return fresh, skipped
            except CommitFailedException as exc:
                log.warning("bronze commit for %s conflicted (attempt %d): %s", topic, attempt, exc)
                time.sleep(0.05 * attempt)
        raise InfrastructureError(
            f"could not commit to the bronze table of {topic} after {COMMIT_ATTEMPTS} tries"
        )

    def _append_quarantine(
        self, rejections: list[Rejection], now: datetime, *, late: bool = False
    ) -> list[Rejection]:
        if not rejections:
            return []
        table = self._quarantine_table()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table.refresh()
            landed = landed_offsets(table)
            if late:
                fresh = [r for r in rejections if not quarantined_before(table, r)]
            else:
                fresh = [r for r in rejections if r.offset > landed.get((r.topic, r.partition), -1)]
            if not fresh:
                return []
            offsets = merge_offsets(landed, ((r.topic, r.partition, r.offset) for r in fresh))
            try:
                table.append(
                    quarantine_rows(fresh, now),
                    snapshot_properties={
                        OFFSETS_PROPERTY: encode_offsets(offsets),
                        MARKS_PROPERTY: self._marks_for(table, None),
                    },
                )
                expire_snapshots(table, self.snapshots_kept)
                return fresh
            except CommitFailedException as exc:
                log.warning("quarantine commit conflicted (attempt %d): %s", attempt, exc)
                time.sleep(0.05 * attempt)
        raise InfrastructureError(f"could not commit to the quarantine table after {COMMIT_ATTEMPTS} tries")

    def _quarantine_table(self) -> Table:
        identifier = (self.namespace, QUARANTINE_TABLE)
        table = self._tables.get(QUARANTINE_TABLE)
        if table is not None:
            return table
        from cdcwh.ingest.quarantine import QUARANTINE_SCHEMA

        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            try:
                table = self.catalog.create_table(
                    identifier, schema=QUARANTINE_SCHEMA, properties=METADATA_PROPERTIES
                )
                with table.update_spec() as spec:
                    spec.add_field("quarantined_at", DayTransform(), "quarantined_day")
            except TableAlreadyExistsError:
                table = self.catalog.load_table(identifier)
        self._tables[QUARANTINE_TABLE] = table
        return table


def quarantined_before(table: Table, rejection: Rejection) -> bool:
    """Whether the quarantine table holds this rejection's record (a filtered scan: only for late ones)."""
    if table.current_snapshot() is None:
        return False
    found = table.scan(
        row_filter=And(
            EqualTo("topic", rejection.topic),  # type: ignore[call-arg,arg-type]
            EqualTo("partition", rejection.partition),  # type: ignore[call-arg,arg-type]
            EqualTo("offset", rejection.offset),  # type: ignore[call-arg,arg-type]
        ),
        selected_fields=("offset",),
    ).to_arrow()
    return bool(found.num_rows > 0)


def expire_snapshots(table: Table, kept: int) -> None:
    """Once the table has twice ``kept`` snapshots, expire all but the newest ``kept`` (in one commit).

    The offsets that make landing exactly-once live in the current snapshot, and the transform reads the
    current snapshot, so only history goes. A conflicting commit is left for the next time."""
    snapshots = sorted(table.snapshots(), key=lambda snap: (snap.sequence_number or 0, snap.timestamp_ms))
    if len(snapshots) < 2 * kept:
        return
    current = table.current_snapshot()
    old = [
        s.snapshot_id for s in snapshots[:-kept] if current is None or s.snapshot_id != current.snapshot_id
    ]
    try:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    except CommitFailedException as exc:
        log.info("snapshot expiry of %s deferred: %s", table.name(), exc)
        return
    log.debug("expired %d snapshots of %s", len(old), table.name())


def drop_empty_structs(table: Table) -> None:
    """Delete top-level struct columns without fields: no row can be written with one (Parquet refuses them).
    Older decoders gave a table without a primary key ``__key: struct<>``; the decoder now leaves it out."""
    empty = [
        f.name
        for f in table.schema().fields
        if isinstance(f.field_type, StructType) and not f.field_type.fields
    ]
    if empty:
        with table.update_schema() as update:
            for name in empty:
                update.delete_column(name)
        log.info("dropped the field-less column(s) %s of %s", ", ".join(empty), table.name())


def data_schema(table: Table) -> pa.Schema:
    """The table's Arrow schema without ``__ingested_at``, in the plain types the decoder produces
    (pyiceberg reads strings as large_string and UTC as +00:00)."""
    schema = table.schema().as_arrow()
    return normalise(schema.remove(schema.get_field_index(INGESTED_AT)))


def normalise(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, normalise_type(f.type), nullable=True) for f in schema])


def normalise_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t) and t.tz is not None:
        return pa.timestamp(t.unit, tz="UTC")
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(normalise_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, normalise_type(f.type), nullable=True) for f in t])
    return t


def rows_ts_type() -> pa.DataType:
    return pa.timestamp("us", tz="UTC")


def drop_landed(rows: pa.Table, landed: Mapping[tuple[str, int], int]) -> pa.Table:
    """Rows whose (topic, partition) offset is above the landed offset."""
    if not landed or rows.num_rows == 0:
        return rows
    keep = None
    for (topic, partition), offset in landed.items():
        mine = pc.and_(
            pc.equal(rows.column("__topic"), topic), pc.equal(rows.column("__partition"), partition)
        )
        stale = pc.and_(mine, pc.less_equal(rows.column("__offset"), offset))
        keep = pc.invert(stale) if keep is None else pc.and_(keep, pc.invert(stale))
    return rows.filter(keep) if keep is not None else rows
