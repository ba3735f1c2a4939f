"""The pipeline's status as typed values: what ``cdcwh status`` prints and what a readiness probe checks.

Four parts are asked independently, each reported or marked unreachable on its own: Kafka (end offsets and
the ingest and sink groups' committed offsets), bronze (the Iceberg catalog: landed offsets, quarantine),
the warehouse (DuckDB: silver watermarks, transform batches, silver freshness, gold models behind) and
PostgreSQL (rows and newest write per mart). ``assess`` turns a status into an exit code (docs/operations.md,
"Readiness"): 2 when a part is unreachable, 1 when lagging or stale beyond the thresholds, else 0.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cdcwh.config import Settings
from cdcwh.errors import CdcwhError

PartName = Literal["kafka", "bronze", "warehouse", "postgres"]
PARTS: tuple[PartName, ...] = ("kafka", "bronze", "warehouse", "postgres")
DEFAULT_MAX_LAG = 10_000
DEFAULT_MAX_STALENESS_S = 300.0


@dataclass(frozen=True)
class Part:
    """Whether one part answered; ``error`` says why not."""

    name: PartName
    reachable: bool
    error: str | None = None


@dataclass(frozen=True)
class SourceLag:
    """One source topic-partition. Counts are offsets: ``end`` is the next offset the broker will write (None
    when Kafka is unreachable), ``in_bronze`` one above the highest offset landed in the bronze table,
    ``ingested`` the same counting the quarantine too, ``in_silver`` one above the transform's watermark.
    Derived: ``to_ingest`` (on the broker, not landed yet), ``to_transform`` (in bronze, not in silver yet)
    and ``behind`` (their sum: the broker's end to silver); None where the end is unknown."""

    topic: str
    partition: int
    end: int | None
    ingest_committed: int | None
    in_bronze: int
    ingested: int
    in_silver: int
    to_ingest: int | None = field(init=False)
    to_transform: int = field(init=False)
    behind: int | None = field(init=False)

    def __post_init__(self) -> None:
        to_ingest = None if self.end is None else max(0, self.end - self.ingested)
        to_transform = max(0, self.in_bronze - self.in_silver)
        object.__setattr__(self, "to_ingest", to_ingest)
        object.__setattr__(self, "to_transform", to_transform)
        object.__setattr__(self, "behind", None if to_ingest is None else to_ingest + to_transform)


@dataclass(frozen=True)
class SinkLag:
    """One gold change topic-partition: its end, the sink group's committed offset, the changes between."""

    topic: str
    partition: int
    end: int
    committed: int | None
    behind: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "behind", max(0, self.end - (self.committed or 0)))


@dataclass(frozen=True)
class Batch:
    batch_id: int
    started_at: datetime
    ended_at: datetime | None
    status: str
    bronze_rows: int | None
    gold_changes: int | None
    error: str | None


@dataclass(frozen=True)
class GoldBehind:
    """A gold model that failed (or reads a mart that did), retried every batch (docs/operations.md)."""

    model: str
    since_batch: int
    error: str | None


@dataclass(frozen=True)
class SilverTable:
    name: str
    rows: int
    newest_source_commit: datetime | None


@dataclass(frozen=True)
class Mart:
    name: str
    rows: int
    newest_write: datetime | None


@dataclass(frozen=True)
class Quarantined:
    topic: str
    reason: str
    outstanding: int
    reingested: int


@dataclass(frozen=True)
class Thresholds:
    max_lag: int = DEFAULT_MAX_LAG
    """Records a partition may be behind (broker end to silver; gold topic end to the sink)."""
    max_staleness_s: float = DEFAULT_MAX_STALENESS_S
    """Seconds a stage with work waiting may go without progress."""


@dataclass(frozen=True)
class Health:
    code: int
    """0 healthy, 1 lagging or stale, 2 a part unreachable."""
    state: Literal["healthy", "lagging", "unreachable"]
    problems: list[str]


@dataclass
class Status:
    checked_at: datetime
    parts: list[Part]
    source: list[SourceLag] = field(default_factory=list)
    sink: list[SinkLag] = field(default_factory=list)
    last_landed: dict[str, datetime] = field(default_factory=dict)
    """Per source topic: when ingest last appended to its bronze table."""
    batches: list[Batch] = field(default_factory=list)
    """The last transform batches, newest first."""
    last_ok_batch_ended: datetime | None = None
    gold_behind: list[GoldBehind] = field(default_factory=list)
    silver: list[SilverTable] = field(default_factory=list)
    marts: list[Mart] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    health: Health | None = None

    def part(self, name: PartName) -> Part:
        return next(p for p in self.parts if p.name == name)


def collect_status(settings: Settings, thresholds: Thresholds | None = None, batches: int = 5) -> Status:
    """Ask every part; one that fails is marked unreachable and the others are still reported."""
    now = datetime.now(UTC)
    parts: dict[PartName, Part] = {}
    landed: dict[tuple[str, int], int] = {}
    quarantined_through: dict[tuple[str, int], int] = {}
    status = Status(checked_at=now, parts=[])
    catalog: Any = None
    try:
        catalog, landed, quarantined_through, status.last_landed = _bronze(settings)
        parts["bronze"] = Part("bronze", True)
    except Exception as exc:  # noqa: BLE001 - any failure of the catalog is "unreachable", shown with its text
        parts["bronze"] = Part("bronze", False, _describe(exc))
    watermarks: dict[tuple[str, int], int] = {}
    try:
        watermarks = _warehouse(settings, status, batches)
        parts["warehouse"] = Part("warehouse", True)
    except Exception as exc:  # noqa: BLE001
        parts["warehouse"] = Part("warehouse", False, _describe(exc))
    ends: dict[tuple[str, int], int] = {}
    committed: dict[tuple[str, int], int] = {}
    source_partitions = set(landed) | set(watermarks)
    try:
        ends, committed, source_partitions, status.sink = _kafka(settings, source_partitions)
        parts["kafka"] = Part("kafka", True)
    except Exception as exc:  # noqa: BLE001
        parts["kafka"] = Part("kafka", False, _describe(exc))
    for topic, partition in sorted(source_partitions):
        key = (topic, partition)
        in_bronze = landed.get(key, -1) + 1
        status.source.append(
            SourceLag(
                topic=topic,
                partition=partition,
                end=ends.get(key),
                ingest_committed=committed.get(key),
                in_bronze=in_bronze,
                ingested=max(in_bronze, quarantined_through.get(key, -1) + 1),
                in_silver=watermarks.get(key, -1) + 1,
            )
        )
    try:
        status.marts = _postgres(settings)
        parts["postgres"] = Part("postgres", True)
    except Exception as exc:  # noqa: BLE001
        parts["postgres"] = Part("postgres", False, _describe(exc))
    if catalog is not None:
        try:
            status.quarantine = _quarantine(settings, catalog)
        except Exception as exc:  # noqa: BLE001
            parts["bronze"] = Part("bronze", False, f"quarantine: {_describe(exc)}")
    status.parts = [parts[name] for name in PARTS]
    status.health = assess(status, thresholds or Thresholds(), now)
    return status


def assess(status: Status, thresholds: Thresholds, now: datetime) -> Health:
    """The exit code of a status: unreachable parts first, then lag and staleness (docs/operations.md).

    A stage is stale when it has work waiting and has not made progress for ``max_staleness_s``: ingest
    (records on the broker not landed; progress = its last append to that bronze table), the transform
    (records in bronze not in silver; progress = its last successful batch) and the sink (gold changes not
    applied; progress = the newest write to a mart). A quiet pipeline with nothing waiting is never stale.
    A gold model behind (failing) counts as stale, and so does a partition bronze knows but the broker has
    no end for (a memory-only broker restarted, its topics not made again yet)."""
    down = [f"{p.name} unreachable: {p.error}" for p in status.parts if not p.reachable]
    if down:
        return Health(2, "unreachable", down)
    problems: list[str] = []
    limit = thresholds.max_staleness_s

    def stale(moment: datetime | None) -> bool:
        return moment is None or (now - moment).total_seconds() > limit

    for lag in status.source:
        where = f"{lag.topic}/{lag.partition}"
        if lag.end is None:  # Kafka answered, but not for this partition: lost by the broker, or silent
            problems.append(
                f"{where}: no end offset from the broker (the partition is gone or did not answer)"
            )
        elif lag.behind is not None and lag.behind > thresholds.max_lag:
            problems.append(f"{where}: {lag.behind:,} records behind silver (max {thresholds.max_lag:,})")
        if lag.to_ingest and stale(status.last_landed.get(lag.topic)):
            problems.append(
                f"{where}: {lag.to_ingest:,} records not ingested, no landing for over {limit:g} s"
            )
        if lag.to_transform and stale(status.last_ok_batch_ended):
            problems.append(
                f"{where}: {lag.to_transform:,} bronze records not in silver, no successful transform "
                f"batch for over {limit:g} s"
            )
    newest_write = max((m.newest_write for m in status.marts if m.newest_write is not None), default=None)
    for sink in status.sink:
        where = f"{sink.topic}/{sink.partition}"
        if sink.behind > thresholds.max_lag:
            problems.append(f"{where}: {sink.behind:,} gold changes not applied (max {thresholds.max_lag:,})")
        if sink.behind and stale(newest_write):
            problems.append(
                f"{where}: {sink.behind:,} gold changes waiting, no mart write for over {limit:g} s"
            )
    for model in status.gold_behind:
        problems.append(
            f"gold.{model.model}: behind since batch {model.since_batch} ({model.error or 'failed'})"
        )
    return Health(1, "lagging", problems) if problems else Health(0, "healthy", [])


def _describe(exc: BaseException) -> str:
    """The error's text for the status report, with every registered secret masked."""
    from cdcwh.redaction import scrub

    return scrub(str(exc) if isinstance(exc, CdcwhError) else f"{type(exc).__name__}: {exc}")


def _bronze(
    settings: Settings,
) -> tuple[Any, dict[tuple[str, int], int], dict[tuple[str, int], int], dict[str, datetime]]:
    """The catalog, the landed offsets of the bronze tables and of the quarantine, and each table's last
    landing."""
    from pyiceberg.exceptions import NoSuchTableError

    from cdcwh.bronze.catalog import QUARANTINE_TABLE, bronze_tables, open_catalog
    from cdcwh.bronze.offsets import landed_offsets

    catalog = open_catalog(settings)
    landed: dict[tuple[str, int], int] = {}
    last: dict[str, datetime] = {}
    for topic, table in bronze_tables(catalog, settings.iceberg.namespace).items():
        landed.update(landed_offsets(table))
        snapshot = table.current_snapshot()
        if snapshot is not None:
            last[topic] = datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC)
    try:
        quarantine = landed_offsets(catalog.load_table((settings.iceberg.namespace, QUARANTINE_TABLE)))
    except NoSuchTableError:
        quarantine = {}
    return catalog, landed, quarantine, last


def _kafka(
    settings: Settings, known: set[tuple[str, int]]
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int], set[tuple[str, int]], list[SinkLag]]:
    """End offsets and the ingest group's committed offsets of the source topics (those ingest reads, and
    those bronze or silver know), and the sink's lag on the gold change topics."""
    from cdcwh.ingest.quarantine import DLQ_SUFFIX
    from cdcwh.kafka import client_config
    from cdcwh.kafka.offsets import committed_offsets, end_offsets, topic_partitions

    config = client_config(settings)
    topics = topic_partitions(config)
    pattern = re.compile(settings.kafka.topics)
    gold_prefix = settings.kafka.gold_topic_prefix + "."
    read = {
        (name, p)
        for name, count in topics.items()
        if pattern.search(name) and not name.endswith(DLQ_SUFFIX) and not name.startswith((gold_prefix, "__"))
        for p in range(count)
    }
    present = {(t, p) for t, p in known if t in topics and p < topics[t]}
    # a partition bronze knows but the broker lost (a memory-only broker restarted) is still listed
    source = read | present | known
    gold = {
        (name, p)
        for name, count in topics.items()
        if name.startswith(gold_prefix) and not name.endswith(DLQ_SUFFIX)
        for p in range(count)
    }
    ends = end_offsets(config, (read | present) | gold)
    group = settings.kafka.group_prefix
    committed = committed_offsets(config, f"{group}-ingest", read | present)
    sink_committed = committed_offsets(config, f"{group}-sink", gold)
    sink = [
        SinkLag(t, p, ends[(t, p)], sink_committed.get((t, p))) for t, p in sorted(gold) if (t, p) in ends
    ]
    return ends, committed, source, sink


def _warehouse(settings: Settings, status: Status, batches: int) -> dict[tuple[str, int], int]:
    """Fills the warehouse's part of ``status``; returns the silver watermarks."""
    from cdcwh.transform.batch import GOLD_BEHIND, load_watermarks
    from cdcwh.warehouse import open_warehouse, quote

    # the transform holds the file across busy batches for hold_s and the batch running then
    con = open_warehouse(settings, read_only=True, wait_s=settings.transform.hold_s + 10)
    try:
        watermarks = load_watermarks(con)
        rows = con.execute(
            "SELECT batch_id, started_at, ended_at, status, bronze_rows, gold_changes, error "
            "FROM cdcwh.batches ORDER BY batch_id DESC LIMIT ?",
            [batches],
        ).fetchall()
        status.batches = [Batch(*row) for row in rows]
        [(ended,)] = con.execute("SELECT max(ended_at) FROM cdcwh.batches WHERE status = 'ok'").fetchall()
        status.last_ok_batch_ended = ended
        behind = con.execute(
            """SELECT m, s.value, (SELECT b.error FROM cdcwh.batch_models AS b WHERE b.model = m
                AND b.status <> 'ok' ORDER BY b.batch_id DESC LIMIT 1)
            FROM (SELECT *, substr(name, ?) AS m FROM cdcwh.state) AS s
            WHERE starts_with(s.name, ?) ORDER BY 1""",
            [len(GOLD_BEHIND) + 1, GOLD_BEHIND],
        ).fetchall()
        status.gold_behind = [GoldBehind(str(m), int(v), e) for m, v, e in behind]
        for (name,) in con.execute("SELECT name FROM cdcwh.silver_tables ORDER BY 1").fetchall():
            [(newest, count)] = con.execute(
                f"SELECT max(__source_ts), count(*) FROM silver.{quote(str(name))}"  # noqa: S608 - quoted
            ).fetchall()
            status.silver.append(SilverTable(str(name), int(count), newest))
        return watermarks
    finally:
        con.close()


def _postgres(settings: Settings) -> list[Mart]:
    import psycopg
    from psycopg import sql

    from cdcwh.embedded import postgres_dsn

    schema = settings.postgres.schema_
    marts = []
    with psycopg.connect(postgres_dsn(settings, "reader"), connect_timeout=5) as conn:
        names = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name NOT LIKE '\\_%%' ORDER BY 1",
            (schema,),
        ).fetchall()
        for (name,) in names:
            rows, newest = conn.execute(
                sql.SQL("SELECT count(*), max(_updated_at) FROM {}").format(sql.Identifier(schema, name))
            ).fetchall()[0]
            marts.append(Mart(str(name), int(rows), newest))
    return marts


def _quarantine(settings: Settings, catalog: Any) -> list[Quarantined]:
    from pyiceberg.exceptions import NoSuchTableError

    from cdcwh.bronze.catalog import QUARANTINE_TABLE
    from cdcwh.replay.quarantine import reingested

    try:
        table = catalog.load_table((settings.iceberg.namespace, QUARANTINE_TABLE))
    except NoSuchTableError:
        return []
    rows = table.scan(selected_fields=("topic", "reason", "partition", "offset")).to_arrow()
    if not rows.num_rows:
        return []
    done = reingested(catalog, settings.iceberg.namespace, rows)
    counts: Counter[tuple[str, str, bool]] = Counter()
    for topic, reason, partition, offset in zip(
        rows["topic"].to_pylist(),
        rows["reason"].to_pylist(),
        rows["partition"].to_pylist(),
        rows["offset"].to_pylist(),
        strict=True,
    ):
        counts[(topic, reason, (topic, partition, offset) in done)] += 1
    return [
        Quarantined(topic, reason, counts[(topic, reason, False)], counts[(topic, reason, True)])
        for topic, reason in sorted({(t, r) for t, r, _ in counts})
    ]
