"""One transform micro-batch: bronze -> silver -> gold -> outbox, in one DuckDB transaction.

Order inside the transaction: read the new bronze rows of every table (above the stored watermarks), apply
them to silver (``silver.py``), recompute the gold models and queue their changes (``gold.py``), advance the
watermarks, record the batch in ``cdcwh.batches``; commit. Then publish the outbox (``outbox.py``). A crash
before the commit leaves silver, gold and the watermarks as they were, so the batch is simply redone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from cdcwh import metrics
from cdcwh.config import Settings
from cdcwh.errors import ConfigError
from cdcwh.ingest.offsets import TopicPartition
from cdcwh.transform.bronze_reader import BronzeSlice, bronze_tables, read_new_rows
from cdcwh.transform.gold import GoldModel, ModelResult, refresh_model
from cdcwh.transform.silver import apply_changes, key_columns
from cdcwh.transform.warehouse import ChangeSet, read_state, scalar, write_state

log = logging.getLogger(__name__)

FRESHNESS_SAMPLE = 256
# cdcwh.state flag: silver changed without gold following (batches with gold=False), so the next gold refresh
# must be a full one
GOLD_STALE = "gold_stale"
SOURCE_TS_SAMPLE = 256


@dataclass
class BatchResult:
    batch_id: int | None = None
    bronze_rows: int = 0
    silver: dict[str, int] = field(default_factory=dict)
    gold: list[ModelResult] = field(default_factory=list)

    @property
    def gold_changes(self) -> int:
        return sum(m.upserts + m.deletes for m in self.gold)


def silver_name(topic: str) -> str:
    """``shop.public.orders`` -> ``orders``: silver tables are named after the source table."""
    return topic.rsplit(".", 1)[-1].lower()


def load_watermarks(con: duckdb.DuckDBPyConnection) -> dict[TopicPartition, int]:
    rows = con.execute('SELECT topic, "partition", "offset" FROM cdcwh.watermarks').fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def _state(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return read_state(con, name) or 0


def _register_silver(con: duckdb.DuckDBPyConnection, name: str, topic: str, keys: list[str]) -> None:
    owner = scalar(con, "SELECT topic FROM cdcwh.silver_tables WHERE name = ?", [name])
    if owner is None:
        con.execute("INSERT INTO cdcwh.silver_tables VALUES (?, ?, ?)", [name, topic, keys])
    elif owner != topic:
        raise ConfigError(
            f"topics {owner} and {topic} both map to silver.{name}; narrow CDCWH_KAFKA__TOPICS so that one "
            f"warehouse holds one source table of each name"
        )


def run_batch(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    models: list[GoldModel],
    *,
    max_offsets_per_partition: int,
    before_commit: Callable[[], None] | None = None,
    gold: bool = True,
) -> BatchResult:
    """Run one micro-batch; an empty result (batch_id None) when bronze has nothing new."""
    watermarks = load_watermarks(con)
    slices: list[BronzeSlice] = []
    for topic, table in sorted(bronze_tables(catalog, settings.iceberg.namespace).items()):
        mine = {tp: o for tp, o in watermarks.items() if tp[0] == topic}
        piece = read_new_rows(table, topic, mine, max_offsets_per_partition)
        if piece is not None:
            slices.append(piece)
    if not slices:
        return BatchResult()
    started = datetime.now(UTC)
    result = BatchResult(batch_id=_state(con, "batch_id") + 1)
    con.begin()
    try:
        seq = _state(con, "seq")
        changes = ChangeSet()
        source_times: list[pa.Array] = []
        for piece in slices:
            name = silver_name(piece.topic)
            _register_silver(con, name, piece.topic, key_columns(piece.rows) if piece.rows.num_rows else [])
            applied = apply_changes(con, name, piece.rows, seq, changes) if piece.rows.num_rows else 0
            seq += piece.rows.num_rows
            result.bronze_rows += piece.rows.num_rows
            result.silver[name] = applied
            metrics.TRANSFORM_ROWS.labels(f"silver.{name}", "in").inc(piece.rows.num_rows)
            metrics.TRANSFORM_ROWS.labels(f"silver.{name}", "out").inc(applied)
            if piece.rows.num_rows:
                source_times.append(piece.rows["__source_ts"].combine_chunks().drop_null())
            con.executemany(
                "INSERT OR REPLACE INTO cdcwh.watermarks VALUES (?, ?, ?)",
                [[topic, partition, offset] for (topic, partition), offset in piece.upper.items()],
            )
        # a truncate applies no row yet changes silver; after silver changed without gold (a rebuild, perhaps
        # interrupted) only a full recompute is right: those changes were never captured
        stale = bool(_state(con, GOLD_STALE))
        if not gold and (any(result.silver.values()) or changes.full):
            write_state(con, GOLD_STALE, 1)
        elif gold and (any(result.silver.values()) or changes.full or stale):
            result.gold = refresh_gold(con, models, result.batch_id or 0, None if stale else changes)
            stamp_source_times(con, result.batch_id or 0, source_times)
            write_state(con, GOLD_STALE, 0)
        write_state(con, "seq", seq)
        write_state(con, "batch_id", result.batch_id or 0)
        con.execute(
            "INSERT INTO cdcwh.batches VALUES (?, ?, now(), 'ok', NULL, ?, ?)",
            [result.batch_id, started, result.bronze_rows, result.gold_changes],
        )
        for name, applied in result.silver.items():
            con.execute(
                "INSERT INTO cdcwh.batch_models VALUES (?, ?, ?, ?)",
                [
                    result.batch_id,
                    f"silver.{name}",
                    sum(p.rows.num_rows for p in slices if silver_name(p.topic) == name),
                    applied,
                ],
            )
        for model in result.gold:
            con.execute(
                "INSERT INTO cdcwh.batch_models VALUES (?, ?, ?, ?)",
                [result.batch_id, model.name, model.rows, model.upserts + model.deletes],
            )
        if before_commit is not None and result.gold_changes:
            before_commit()
        con.commit()
    except Exception as exc:
        con.rollback()
        record_failure(con, result.batch_id or 0, started, exc)
        raise
    observe_freshness(slices)
    return result


def run_gold_batch(con: duckdb.DuckDBPyConnection, models: list[GoldModel]) -> BatchResult:
    """A batch that only recomputes gold (after a rebuild of silver), recorded like any other."""
    started = datetime.now(UTC)
    result = BatchResult(batch_id=_state(con, "batch_id") + 1)
    con.begin()
    try:
        result.gold = refresh_gold(con, models, result.batch_id or 0)
        write_state(con, GOLD_STALE, 0)
        write_state(con, "batch_id", result.batch_id or 0)
        con.execute(
            "INSERT INTO cdcwh.batches VALUES (?, ?, now(), 'ok', NULL, 0, ?)",
            [result.batch_id, started, result.gold_changes],
        )
        con.commit()
    except Exception as exc:
        con.rollback()
        record_failure(con, result.batch_id or 0, started, exc)
        raise
    return result


def refresh_gold(
    con: duckdb.DuckDBPyConnection, models: list[GoldModel], version: int, changes: ChangeSet | None = None
) -> list[ModelResult]:
    """Refresh every model whose silver inputs exist (a mart over a table that never had a row waits): in
    full, or with the batch's ``changes`` only the rows they touch where the model says how (gold.py)."""
    existing = {
        (str(schema), str(name))
        for schema, name in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    }
    results = []
    for model in models:
        missing = [ref for ref in model.reads if ref not in existing]
        if missing:
            log.debug("gold.%s waits for %s", model.name, ", ".join(".".join(ref) for ref in missing))
            continue
        result = refresh_model(con, model, version, changes)
        existing.add(("gold", model.name))
        metrics.TRANSFORM_ROWS.labels(model.name, "out").inc(result.upserts + result.deletes)
        results.append(result)
    return results


def stamp_source_times(con: duckdb.DuckDBPyConnection, version: int, source_times: list[pa.Array]) -> None:
    """Stamp the batch's gold changes with source commit times of the batch's changes: an evenly spaced
    sample, sorted, dealt out over the changes in turn. The sink measures source -> Postgres freshness from
    these, so its histogram follows the batch's changes rather than repeating the batch's oldest one."""
    times = pa.chunked_array(source_times, pa.timestamp("us", tz="UTC")) if source_times else None
    if times is None or len(times) == 0:
        return
    step = max(1, len(times) // SOURCE_TS_SAMPLE)
    sample = pc.sort_indices(times).take(pa.array(range(0, len(times), step)))
    stamps = pc.take(times, sample).to_pylist()
    # dealt out by (mart, key) order, not by outbox id: a batch redone after a crash draws other ids from the
    # sequence, and must still publish exactly the same changes
    con.execute(
        """UPDATE cdcwh.outbox SET source_ts = list_extract(?::TIMESTAMPTZ[], (dealt.n % ?)::BIGINT + 1)
        FROM (SELECT id, row_number() OVER (ORDER BY mart, key, op) - 1 AS n FROM cdcwh.outbox
              WHERE version = ? AND source_ts IS NULL) AS dealt
        WHERE cdcwh.outbox.id = dealt.id""",
        [stamps, len(stamps), version],
    )


def record_failure(con: duckdb.DuckDBPyConnection, batch_id: int, started: datetime, exc: Exception) -> None:
    metrics.ERRORS.labels("transform", metrics.error_kind(exc)).inc()
    try:
        con.execute(
            "INSERT OR REPLACE INTO cdcwh.batches VALUES (?, ?, now(), 'failed', ?, NULL, NULL)",
            [batch_id, started, f"{type(exc).__name__}: {exc}"[:2000]],
        )
    except duckdb.Error as audit_error:
        log.error("could not record the failed batch %d: %s", batch_id, audit_error)


def observe_freshness(slices: list[BronzeSlice]) -> None:
    now = time.time()
    for piece in slices:
        column = piece.rows["__source_ts"].drop_null() if piece.rows.num_rows else None
        if column is None or len(column) == 0:
            continue
        step = max(1, len(column) // FRESHNESS_SAMPLE)
        sample = column.take(pa.array(range(0, len(column), step)))
        sample = pc.cast(pc.cast(sample, pa.timestamp("us", tz="UTC")), pa.int64())  # us since the epoch
        for micros in sample.to_pylist():
            metrics.FRESHNESS.labels("gold").observe(max(0.0, now - micros / 1e6))
