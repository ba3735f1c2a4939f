"""One transform micro-batch: bronze -> silver -> gold -> outbox, in one DuckDB transaction.

Order inside the transaction: read the new bronze rows of every table (above the stored watermarks), apply
them to silver (``silver.py``), recompute the gold models and queue their changes (``gold.py``), advance the
watermarks, record the batch in ``cdcwh.batches``; commit. Then publish the outbox (``outbox.py``). A crash
before the commit leaves silver, gold and the watermarks as they were, so the batch is simply redone.

A gold model that raises does not fail the batch: the transaction is rolled back and the batch redone without
that model and the models that read its mart (DuckDB has no savepoints, and an error aborts the transaction),
so silver and the other marts advance. The batch is recorded ``partial``, the model ``failed`` (the others
``skipped``) in ``cdcwh.batch_models``, and the models are marked behind in ``cdcwh.state``: every later batch
retries them with a full recompute (the changes of the batches they missed were not kept for them), whose
difference goes to the outbox like any other. Any other error rolls the batch back and records it ``failed``
under its own id; the retry takes the next id, so the marts' ``_version`` keeps growing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
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
from cdcwh.transform.warehouse import ChangeSet, count, read_state, scalar, write_state

log = logging.getLogger(__name__)

FRESHNESS_SAMPLE = 256
# cdcwh.state flag: silver changed without gold following (batches with gold=False), so the next gold refresh
# must be a full one
GOLD_STALE = "gold_stale"
SOURCE_TS_SAMPLE = 256
# cdcwh.state mark of a gold model behind (it failed, or a mart it reads did): ``gold_behind:<model>`` = the
# first batch it missed. Its next refresh is a full one; the batch in which that succeeds deletes the mark.
GOLD_BEHIND = "gold_behind:"


@dataclass
class BatchResult:
    batch_id: int | None = None
    bronze_rows: int = 0
    silver: dict[str, int] = field(default_factory=dict)
    silver_rows_in: dict[str, int] = field(default_factory=dict)
    gold: list[ModelResult] = field(default_factory=list)
    # gold models that raised (model -> error) and models left out because a mart they read did not refresh
    # (model -> why): none of their writes is in the batch, and they are behind until a full refresh succeeds
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def gold_changes(self) -> int:
        return sum(m.upserts + m.deletes for m in self.gold)

    @property
    def status(self) -> str:
        return "partial" if self.failed or self.skipped else "ok"


class ModelFailed(Exception):
    """A gold model's refresh raised. DuckDB aborts the whole transaction on an error and has no savepoints,
    so the batch is rolled back and redone without the model (and the models that read it)."""

    def __init__(self, model: str, cause: Exception) -> None:
        self.model = model
        self.error = describe(cause)
        super().__init__(f"gold.{model}: {self.error}")


# errors that are not a model's: the database itself failed, and the whole batch with it
NOT_THE_MODELS = (duckdb.FatalException, duckdb.InternalException)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def silver_name(topic: str) -> str:
    """``shop.public.orders`` -> ``orders``: silver tables are named after the source table."""
    return topic.rsplit(".", 1)[-1].lower()


def load_watermarks(con: duckdb.DuckDBPyConnection) -> dict[TopicPartition, int]:
    rows = con.execute('SELECT topic, "partition", "offset" FROM cdcwh.watermarks').fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def _state(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return read_state(con, name) or 0


def next_batch_id(con: duckdb.DuckDBPyConnection) -> int:
    """One above every batch committed or recorded as failed. A failed batch keeps its id and its row in
    ``cdcwh.batches``; its retry takes the next one. Ids (the marts' ``_version``) only grow, with gaps where
    batches failed."""
    recorded = count(con, "SELECT coalesce(max(batch_id), 0) FROM cdcwh.batches")
    return max(_state(con, "batch_id"), recorded) + 1


def models_behind(con: duckdb.DuckDBPyConnection, models: list[GoldModel]) -> dict[str, int]:
    """The gold models that missed a batch (failed, or skipped because a mart they read failed), each with
    the first batch it missed: their next refresh recomputes them in full."""
    names = {model.name for model in models}
    rows = con.execute(
        "SELECT name, value FROM cdcwh.state WHERE starts_with(name, ?)", [GOLD_BEHIND]
    ).fetchall()
    behind = {str(name).removeprefix(GOLD_BEHIND): int(value) for name, value in rows}
    return {name: since for name, since in behind.items() if name in names}


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
    retry_behind: bool = False,
) -> BatchResult:
    """Run one micro-batch; an empty result (batch_id None) when bronze has nothing new, unless
    ``retry_behind`` and a gold model is behind: then a batch without bronze rows retries it."""
    watermarks = load_watermarks(con)
    slices: list[BronzeSlice] = []
    for topic, table in sorted(bronze_tables(catalog, settings.iceberg.namespace).items()):
        mine = {tp: o for tp, o in watermarks.items() if tp[0] == topic}
        piece = read_new_rows(table, topic, mine, max_offsets_per_partition)
        if piece is not None:
            slices.append(piece)
    behind = models_behind(con, models) if gold else {}
    if not slices and not (retry_behind and behind):
        return BatchResult()
    started = datetime.now(UTC)

    def work(result: BatchResult) -> None:
        _apply_batch(con, result, slices, models, behind, gold=gold)
        _record_batch(con, result, started)
        if before_commit is not None and result.gold_changes:
            before_commit()

    result = _in_transaction(con, next_batch_id(con), started, work)
    _observe(result)
    observe_freshness(slices)
    return result


def _apply_batch(
    con: duckdb.DuckDBPyConnection,
    result: BatchResult,
    slices: list[BronzeSlice],
    models: list[GoldModel],
    behind: dict[str, int],
    *,
    gold: bool,
) -> None:
    version = result.batch_id or 0
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
        result.silver_rows_in[name] = result.silver_rows_in.get(name, 0) + piece.rows.num_rows
        if piece.rows.num_rows:
            source_times.append(piece.rows["__source_ts"].combine_chunks().drop_null())
        con.executemany(
            "INSERT OR REPLACE INTO cdcwh.watermarks VALUES (?, ?, ?)",
            [[topic, partition, offset] for (topic, partition), offset in piece.upper.items()],
        )
    # a truncate applies no row yet changes silver; after silver changed without gold (a rebuild, perhaps
    # interrupted) only a full recompute is right: those changes were never captured
    stale = bool(_state(con, GOLD_STALE))
    changed = any(result.silver.values()) or bool(changes.full)
    if not gold and changed:
        write_state(con, GOLD_STALE, 1)
    elif gold and (changed or stale or behind):
        _refresh_and_mark(con, result, models, behind, None if stale else changes)
        stamp_source_times(con, version, source_times)
        write_state(con, GOLD_STALE, 0)
    write_state(con, "seq", seq)
    write_state(con, "batch_id", version)


def run_gold_batch(con: duckdb.DuckDBPyConnection, models: list[GoldModel]) -> BatchResult:
    """A batch that only recomputes gold (after a rebuild of silver), recorded like any other."""
    started = datetime.now(UTC)
    behind = models_behind(con, models)

    def work(result: BatchResult) -> None:
        _refresh_and_mark(con, result, models, behind, None)
        write_state(con, GOLD_STALE, 0)
        write_state(con, "batch_id", result.batch_id or 0)
        _record_batch(con, result, started)

    result = _in_transaction(con, next_batch_id(con), started, work)
    _observe(result)
    return result


def _in_transaction(
    con: duckdb.DuckDBPyConnection,
    batch_id: int,
    started: datetime,
    work: Callable[[BatchResult], None],
) -> BatchResult:
    """Run ``work`` in one transaction and commit it. A gold model that fails takes the whole transaction
    with it (DuckDB aborts a transaction on any error and has no savepoints), so the batch is rolled back and
    redone from the start without that model and the models that read it: none of their writes (gold rows,
    outbox rows, captured images) is in what commits. Each redo leaves out one more model, so this ends. Any
    other failure rolls the batch back, records it in ``cdcwh.batches`` under its own id, and raises."""
    failed: dict[str, str] = {}
    while True:
        result = BatchResult(batch_id=batch_id, failed=dict(failed))
        con.begin()
        try:
            work(result)
            con.commit()
            return result
        except ModelFailed as failure:
            con.rollback()
            metrics.TRANSFORM_MODEL_FAILURES.labels(failure.model).inc()
            log.error(
                "batch %d: gold.%s failed (%s); redoing the batch without it and the models that read it",
                batch_id,
                failure.model,
                failure.error,
            )
            failed[failure.model] = failure.error
        except Exception as exc:
            con.rollback()
            record_failure(con, batch_id, started, exc)
            raise


def _refresh_and_mark(
    con: duckdb.DuckDBPyConnection,
    result: BatchResult,
    models: list[GoldModel],
    behind: dict[str, int],
    changes: ChangeSet | None,
) -> None:
    """Refresh gold and keep ``cdcwh.state``'s behind marks: set for the models failed or skipped (the first
    batch each missed), cleared for the ones that refreshed (in full, since they were behind)."""
    version = result.batch_id or 0
    result.gold, result.skipped = refresh_gold(
        con, models, version, changes, failed=result.failed, behind=set(behind)
    )
    for name in sorted(result.failed.keys() | result.skipped.keys()):
        write_state(con, GOLD_BEHIND + name, behind.get(name, version))
    for model in result.gold:
        if model.name in behind:
            con.execute("DELETE FROM cdcwh.state WHERE name = ?", [GOLD_BEHIND + model.name])
            log.info("gold.%s caught up (behind since batch %d)", model.name, behind[model.name])


def _record_batch(con: duckdb.DuckDBPyConnection, result: BatchResult, started: datetime) -> None:
    """The batch's audit rows: ``cdcwh.batches`` and one ``cdcwh.batch_models`` row per silver table and gold
    model, a failed or skipped model with its status and error."""
    problems = [f"gold.{name} failed: {error}" for name, error in result.failed.items()]
    problems += [f"gold.{name} skipped: {why}" for name, why in result.skipped.items()]
    con.execute(
        "INSERT INTO cdcwh.batches VALUES (?, ?, now(), ?, ?, ?, ?)",
        [
            result.batch_id,
            started,
            result.status,
            "; ".join(problems)[:2000] or None,
            result.bronze_rows,
            result.gold_changes,
        ],
    )
    insert = (
        "INSERT INTO cdcwh.batch_models (batch_id, model, rows_in, rows_out, status, error) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    rows: list[list[object]] = [
        [result.batch_id, f"silver.{name}", result.silver_rows_in.get(name, 0), applied, "ok", None]
        for name, applied in result.silver.items()
    ]
    rows += [
        [result.batch_id, model.name, model.rows, model.upserts + model.deletes, "ok", None]
        for model in result.gold
    ]
    rows += [[result.batch_id, name, 0, 0, "failed", error] for name, error in result.failed.items()]
    rows += [[result.batch_id, name, 0, 0, "skipped", why] for name, why in result.skipped.items()]
    if rows:
        con.executemany(insert, rows)


def _observe(result: BatchResult) -> None:
    """Metrics of a committed batch (not of its rolled-back attempts)."""
    for name, applied in result.silver.items():
        metrics.TRANSFORM_ROWS.labels(f"silver.{name}", "in").inc(result.silver_rows_in.get(name, 0))
        metrics.TRANSFORM_ROWS.labels(f"silver.{name}", "out").inc(applied)
    for model in result.gold:
        metrics.TRANSFORM_ROWS.labels(model.name, "out").inc(model.upserts + model.deletes)
        metrics.TRANSFORM_MODEL_FAILED.labels(model.name).set(0)
        metrics.TRANSFORM_MODEL_BEHIND.labels(model.name).set(0)
    for name in result.failed:
        metrics.TRANSFORM_MODEL_FAILED.labels(name).set(1)
        metrics.TRANSFORM_MODEL_BEHIND.labels(name).set(1)
    for name in result.skipped:
        metrics.TRANSFORM_MODEL_FAILED.labels(name).set(0)
        metrics.TRANSFORM_MODEL_BEHIND.labels(name).set(1)


def refresh_gold(
    con: duckdb.DuckDBPyConnection,
    models: list[GoldModel],
    version: int,
    changes: ChangeSet | None = None,
    *,
    failed: Mapping[str, str] | None = None,
    behind: Collection[str] = (),
) -> tuple[list[ModelResult], dict[str, str]]:
    """Refresh every model whose silver inputs exist (a mart over a table that never had a row waits): in
    full, or with the batch's ``changes`` only the rows they touch where the model says how (gold.py); the
    ``behind`` ones in full. The ``failed`` ones are left out, and so is every model that reads one of them
    (directly or through another): returns the results and those skipped (model -> why). A model that raises
    raises ModelFailed."""
    failed = failed or {}
    existing = {
        (str(schema), str(name))
        for schema, name in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    }
    results: list[ModelResult] = []
    skipped: dict[str, str] = {}
    for model in models:
        if model.name in failed:
            continue
        upstream = sorted(model.depends_on & (failed.keys() | skipped.keys()))
        if upstream:
            skipped[model.name] = (
                "reads " + ", ".join(f"gold.{name}" for name in upstream) + ", not refreshed"
            )
            continue
        missing = [ref for ref in model.reads if ref not in existing]
        if missing:
            log.debug("gold.%s waits for %s", model.name, ", ".join(".".join(ref) for ref in missing))
            continue
        try:
            result = refresh_model(con, model, version, changes, full=model.name in behind)
        except NOT_THE_MODELS:
            raise
        except Exception as exc:
            raise ModelFailed(model.name, exc) from exc
        existing.add(("gold", model.name))
        results.append(result)
    return results, skipped


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
    """Record a rolled-back batch (outside its transaction). The row keeps ``batch_id``: the retry takes the
    next id (``next_batch_id``), so it never collides with this row."""
    metrics.ERRORS.labels("transform", metrics.error_kind(exc)).inc()
    try:
        con.execute(
            "INSERT OR REPLACE INTO cdcwh.batches VALUES (?, ?, now(), 'failed', ?, NULL, NULL)",
            [batch_id, started, describe(exc)],
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
