"""One transform micro-batch: bronze -> silver -> gold -> outbox, in one DuckDB transaction.

Order inside the transaction: read the new bronze rows of every table (above the stored watermarks), apply
them to silver (``silver.py``), recompute the gold models and queue their changes (``refresh.py``,
``gold.py``), advance the watermarks, record the batch in ``cdcwh.batches``; commit. Then publish the
outbox (``outbox.py``). A crash before the commit leaves silver, gold and the watermarks as they were, so the
batch is simply redone.

Only the bronze tables whose topic matches ``CDCWH_KAFKA__TOPICS`` are read. One table's problem does not stop
the others: a table whose slice raises while read or applied is left out like a failing gold model (below: the
batch is redone without it), recorded ``failed`` in ``cdcwh.batch_models``, its watermarks left where they
were, and retried by the later batches; the gold models reading it are skipped and behind.

A gold model that raises does not fail the batch: the transaction is rolled back and the batch redone without
that model and the models that read its mart (DuckDB has no savepoints, and an error aborts the transaction),
so silver and the other marts advance. The batch is recorded ``partial``, the model ``failed`` (the others
``skipped``) in ``cdcwh.batch_models``, and the models are marked behind in ``cdcwh.state``: every later batch
retries them with a full recompute (the changes of the batches they missed were not kept for them), whose
difference goes to the outbox like any other. Any other error rolls the batch back and records it ``failed``
under its own id; the retry takes the next id.

The marts' ``_version`` is not the batch id but the batch's version (``next_version``): above every version
the warehouse file gave out and at least the current time in microseconds, so that a warehouse rebuilt from
bronze (a lost file, a new machine) or restored from an older copy still gives versions above those PostgreSQL
holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog

from cdcwh import metrics
from cdcwh.bronze.catalog import bronze_tables
from cdcwh.bronze.offsets import TopicPartition
from cdcwh.config import Settings
from cdcwh.errors import ConfigError
from cdcwh.models import GoldModel
from cdcwh.quality.anomalies import note_source_clock
from cdcwh.quality.gate import (
    TestError,
    check_gold,
    models_to_check,
    pending_bypasses,
    relations_tested,
    run_scoped,
)
from cdcwh.quality.results import TestResult
from cdcwh.quality.runner import ensure_tables, observe, record_results
from cdcwh.quality.spec import TestSpec
from cdcwh.transform.bronze_reader import BronzeSlice, read_new_rows
from cdcwh.transform.gold import ModelResult
from cdcwh.transform.refresh import NOT_THE_MODELS, ModelFailed, describe, refresh_gold, stamp_source_times
from cdcwh.transform.silver import COLUMNS_TABLE, apply_changes, key_columns
from cdcwh.warehouse import SILVER_FAILED, ChangeSet, count, insert_rows, read_state, scalar, write_state

log = logging.getLogger(__name__)

# cdcwh.state flag: silver changed without gold following (batches with gold=False), so the next gold refresh
# must be a full one
GOLD_STALE = "gold_stale"
# the schema whose tables keep their plain name in silver (PostgreSQL's default)
DEFAULT_SCHEMA = "public"
# cdcwh.state mark of a gold model behind (it failed, or a mart it reads did): ``gold_behind:<model>`` = the
# first batch it missed. Its next refresh is a full one; the batch in which that succeeds deletes the mark.
GOLD_BEHIND = "gold_behind:"
# cdcwh.state mark of a gold model an error test holds (quality/gate.py): ``gate_held:<model>`` = the first
# batch it held; deleted by the batch in which the model passes (or is bypassed) and publishes again
GATE_HELD = "gate_held:"
# cdcwh.state: the version of the last committed batch (the ``_version`` of the gold rows it changed)
VERSION = "version"


@dataclass
class BatchResult:
    batch_id: int | None = None
    # the ``_version`` of the gold rows and outbox changes of the batch (next_version), not its id
    version: int | None = None
    bronze_rows: int = 0
    silver: dict[str, int] = field(default_factory=dict)
    silver_rows_in: dict[str, int] = field(default_factory=dict)
    gold: list[ModelResult] = field(default_factory=list)
    # gold models that raised (model -> error) and models left out because a mart they read did not refresh
    # (model -> why): none of their writes is in the batch, and they are behind until a full refresh succeeds
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # silver tables whose slice could not be read or applied (table -> error): nothing of them is in the
    # batch, their watermarks stay, and the gold models reading them are skipped (behind)
    failed_tables: dict[str, str] = field(default_factory=dict)
    # data quality: the batch-scope results of the models and tables it refreshed, the gold models an error
    # test holds (model -> failing results; they are in ``failed`` too) and those a bypass let through
    dq: list[TestResult] = field(default_factory=list)
    held: dict[str, list[TestResult]] = field(default_factory=dict)
    bypassed: dict[str, str] = field(default_factory=dict)
    # tests whose query raised in an earlier attempt of the batch (test id -> error): they fail unrun
    broken_tests: dict[str, str] = field(default_factory=dict)

    @property
    def gold_changes(self) -> int:
        return sum(m.upserts + m.deletes for m in self.gold)

    @property
    def status(self) -> str:
        return "partial" if self.failed or self.skipped or self.failed_tables else "ok"


class GateHeld(Exception):
    """An ``error`` data quality test failed on the rows a batch gave gold models: like a failing model, the
    batch is redone without them (and the models reading them); their marts stay at the last passing state."""

    def __init__(self, held: dict[str, list[TestResult]]) -> None:
        self.held = held
        super().__init__("held by data quality tests: " + ", ".join(sorted(held)))


class TableFailed(Exception):
    """Reading or applying one silver table's slice raised. Like a model's failure it aborts the transaction,
    so the batch is redone without the table; its watermarks stay where they were."""

    def __init__(self, table: str, cause: Exception) -> None:
        self.table = table
        self.error = describe(cause)
        super().__init__(f"silver.{table}: {self.error}")


def silver_name(topic: str) -> str:
    """The default silver name of a topic: the source table, qualified by its schema unless that is
    ``public`` (``shop.public.orders`` -> ``orders``, ``shop.sales.accounts`` -> ``sales__accounts``), so that
    two schemas' tables of one name never meet in silver while the usual PostgreSQL tables keep plain names.
    A topic already in ``cdcwh.silver_tables`` keeps the name it has there (``silver_names``)."""
    parts = topic.lower().split(".")
    table = parts[-1]
    schema = parts[-2] if len(parts) >= 3 else DEFAULT_SCHEMA
    return table if schema == DEFAULT_SCHEMA else f"{schema}__{table}"


def silver_names(con: duckdb.DuckDBPyConnection, topics: Iterable[str]) -> dict[str, str]:
    """The silver table of each topic: the one registered in ``cdcwh.silver_tables`` (a warehouse file keeps
    its names), else ``silver_name``; when another topic already holds that (a name registered before names
    were qualified), ``<schema>__<table>``, then the whole topic with ``__`` for dots, then with a number."""
    registered = {
        str(topic): str(name)
        for name, topic in con.execute("SELECT name, topic FROM cdcwh.silver_tables").fetchall()
    }
    taken = set(registered.values())
    names: dict[str, str] = {}
    for topic in sorted(topics):
        if topic in registered:
            names[topic] = registered[topic]
            continue
        parts = topic.lower().split(".")
        candidates = [silver_name(topic), "__".join(parts[-2:]), "__".join(parts)]
        name = next((c for c in candidates if c not in taken), None)
        suffix = 2
        while name is None or name in taken:
            name, suffix = f"{candidates[-1]}_{suffix}", suffix + 1
        names[topic] = name
        taken.add(name)
    return names


def load_watermarks(con: duckdb.DuckDBPyConnection) -> dict[TopicPartition, int]:
    rows = con.execute('SELECT topic, "partition", "offset" FROM cdcwh.watermarks').fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def _state(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return read_state(con, name) or 0


def next_batch_id(con: duckdb.DuckDBPyConnection) -> int:
    """One above every batch committed or recorded as failed. A failed batch keeps its id and its row in
    ``cdcwh.batches``; its retry takes the next one. Ids only grow, with gaps where batches failed. They
    number the batches of this file; the marts' ``_version`` is ``next_version``."""
    recorded = count(con, "SELECT coalesce(max(batch_id), 0) FROM cdcwh.batches")
    return max(_state(con, "batch_id"), recorded) + 1


def next_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version of the next batch's gold changes: max(the last batch's + 1, the current UTC time in
    microseconds since the epoch).

    It only grows within one warehouse file, whatever the clock does. And it does not depend on the file:
    a file rebuilt from bronze (the old one lost, or a new machine) or restored from an older copy gives
    versions above every version an older file gave out, as long as the host's clock has not gone back by
    more than the time since that file's last batch. So PostgreSQL, which applies only a version newer than
    the one it holds, never ignores the changes of a new file. Files from before versions were times used
    the batch id, a small number: their first batch here jumps to the clock. About 1.8e15 today, far within a
    BIGINT (9.2e18)."""
    previous = max(_state(con, VERSION), _state(con, "batch_id"))
    return max(previous + 1, time.time_ns() // 1000)


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
    elif owner == topic and keys:  # registered from a keyless first slice (a truncate): take the keys now
        con.execute(
            "UPDATE cdcwh.silver_tables SET key_columns = ? WHERE name = ? AND len(key_columns) = 0",
            [keys, name],
        )
    elif owner != topic:
        raise ConfigError(
            f"topics {owner} and {topic} both map to silver.{name}; narrow CDCWH_KAFKA__TOPICS so that one "
            f"warehouse holds one source table of each name"
        )


def failed_tables(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The silver tables whose slice failed and has not been applied since, each with the first batch it
    failed (``cdcwh.state`` ``silver_failed:<table>``)."""
    rows = con.execute(
        "SELECT name, value FROM cdcwh.state WHERE starts_with(name, ?)", [SILVER_FAILED]
    ).fetchall()
    return {str(name).removeprefix(SILVER_FAILED): int(value) for name, value in rows}


def read_bronze(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    watermarks: Mapping[TopicPartition, int],
    max_offsets_per_partition: int,
    *,
    retry_failed: bool = False,
) -> list[BronzeSlice]:
    """The new rows of every bronze table whose topic matches ``CDCWH_KAFKA__TOPICS``, each slice with its
    silver table. A table whose read raises is a slice with ``error`` and no rows: the batch records it failed
    and leaves its watermarks. Tables that failed before and have not been applied since are read only when
    the batch runs anyway (another table has new rows, or ``retry_failed``: a process's first batch), so a
    table that keeps failing does not make a batch of its own every interval, and ``--once`` and a rebuild
    end."""
    con.execute(COLUMNS_TABLE)  # cdcwh.silver_columns, for silver.py's columns no longer arriving
    tables = bronze_tables(catalog, settings.iceberg.namespace, settings.kafka.topics)
    names = silver_names(con, tables)
    failed = failed_tables(con)

    def read(topic: str) -> BronzeSlice | None:
        table, name = tables[topic], names[topic]
        mine = {tp: o for tp, o in watermarks.items() if tp[0] == topic}
        try:
            piece = read_new_rows(table, topic, mine, max_offsets_per_partition)
        except NOT_THE_MODELS:
            raise
        except Exception as exc:
            log.error("silver.%s: reading bronze (%s) failed: %s", name, topic, describe(exc))
            return BronzeSlice(topic, table.name()[-1], pa.table({}), {}, silver=name, error=describe(exc))
        return None if piece is None else replace(piece, silver=name)

    slices = [piece for topic in sorted(tables) if names[topic] not in failed and (piece := read(topic))]
    if slices or retry_failed:
        slices += [piece for topic in sorted(tables) if names[topic] in failed and (piece := read(topic))]
    return sorted(slices, key=lambda piece: piece.topic)


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
    tests: Sequence[TestSpec] = (),
) -> BatchResult:
    """Run one micro-batch: read bronze, then in one transaction apply silver, refresh gold and record the
    batch. An empty result (batch_id None) when bronze has nothing new, unless ``retry_behind`` and a gold
    model is behind: then a batch without bronze rows retries it. ``before_commit`` runs just before the
    commit of a batch with gold changes (the crash tests' fault point)."""
    watermarks = load_watermarks(con)
    slices = read_bronze(
        settings, con, catalog, watermarks, max_offsets_per_partition, retry_failed=retry_behind
    )
    behind = models_behind(con, models) if gold else {}
    if not slices and not (retry_behind and behind):
        return BatchResult()
    started = datetime.now(UTC)

    def work(result: BatchResult) -> None:
        seq_from = _state(con, "seq")
        changes, source_times = apply_silver(con, result, slices)
        if tests:
            touched = [f"silver.{name}" for name, applied in result.silver.items() if applied]
            scope = f"__seq > {seq_from}"
            result.dq += run_scoped(con, tests, touched, scope, result.batch_id or 0, result.broken_tests)
        if gold:
            refresh_gold_after(con, result, models, behind, changes, source_times, tests)
            gate_gold(con, result, tests)
        else:
            hold_gold(con, result, changes)
        _record_batch(con, result, started)
        if before_commit is not None and result.gold_changes:
            before_commit()

    result = _in_transaction(con, next_batch_id(con), started, work)
    _observe(result)
    observe_freshness(slices)
    return result


def apply_silver(
    con: duckdb.DuckDBPyConnection, result: BatchResult, slices: list[BronzeSlice]
) -> tuple[ChangeSet, list[pa.Array]]:
    """Apply every slice to its silver table and advance its watermarks; a slice that fails is left out
    (``TableFailed``: the batch is redone without it). Returns what changed, for the incremental gold models,
    and the source commit times of the rows applied."""
    seq = _state(con, "seq")
    changes = ChangeSet()
    source_times: list[pa.Array] = []
    for piece in slices:
        name = piece.silver or silver_name(piece.topic)
        if name in result.failed_tables:
            continue  # failed in an earlier attempt of this batch, which is redone without it
        if piece.error is not None:
            result.failed_tables[name] = piece.error
            continue
        try:
            _register_silver(con, name, piece.topic, key_columns(piece.rows) if piece.rows.num_rows else [])
            applied = (
                apply_changes(con, name, piece.rows, seq, changes, batch_id=result.batch_id or 0)
                if piece.rows.num_rows
                else 0
            )
        except NOT_THE_MODELS:
            raise
        except Exception as exc:
            raise TableFailed(name, exc) from exc
        seq += piece.rows.num_rows
        result.bronze_rows += piece.rows.num_rows
        result.silver[name] = applied
        result.silver_rows_in[name] = result.silver_rows_in.get(name, 0) + piece.rows.num_rows
        if piece.rows.num_rows:
            source_times.append(piece.rows["__source_ts"].combine_chunks().drop_null())
        watermarks = [[topic, partition, offset] for (topic, partition), offset in piece.upper.items()]
        if watermarks:
            insert_rows(con, "INSERT OR REPLACE INTO cdcwh.watermarks", watermarks)
    _mark_failed_tables(con, result)
    write_state(con, "seq", seq)
    note_source_clock(con, source_times, backlog=any(piece.more for piece in slices))
    return changes, source_times


def gate_gold(con: duckdb.DuckDBPyConnection, result: BatchResult, tests: Sequence[TestSpec]) -> None:
    """Test the rows the batch gave the refreshed gold models (after all of them refreshed, so that a
    ``relationships`` test sees this batch's dimensions); GateHeld for the models an error test holds. A
    model whose batch only deleted rows is tested too: its row-scoped tests see no row, but its ``row_count``
    tests count the whole model. So is a model with a ``relationships`` test on a changed model (on the rows
    whose parent the batch deleted), and a held model is tested on all its rows until it passes: rows a
    deleted parent left without one are old rows, in no batch's difference."""
    gold = [m.name for m in result.gold]
    changed = [m.name for m in result.gold if m.upserts or m.deletes]
    refreshed = models_to_check(tests, changed, gold)
    held = {name for name in gold if read_state(con, GATE_HELD + name) is not None}
    if not tests or not (refreshed or held):
        return
    ensure_tables(con)
    outcome = check_gold(
        con,
        tests,
        refreshed,
        version=result.version or 0,
        batch_id=result.batch_id or 0,
        bypass=pending_bypasses(con),
        broken=result.broken_tests,
        held=held,
    )
    if outcome.held:
        raise GateHeld(outcome.held)
    result.dq += outcome.results
    result.bypassed = outcome.bypassed


def _silver_changed(result: BatchResult, changes: ChangeSet) -> bool:
    # a truncate applies no row yet changes silver
    return any(result.silver.values()) or bool(changes.full)


def hold_gold(con: duckdb.DuckDBPyConnection, result: BatchResult, changes: ChangeSet) -> None:
    """A batch without gold (a rebuild of silver): silver changed without gold following, so the next
    refresh must be a full one (these changes were not captured for it)."""
    if _silver_changed(result, changes):
        write_state(con, GOLD_STALE, 1)


def refresh_gold_after(
    con: duckdb.DuckDBPyConnection,
    result: BatchResult,
    models: list[GoldModel],
    behind: dict[str, int],
    changes: ChangeSet,
    source_times: list[pa.Array],
    tests: Sequence[TestSpec] = (),
) -> None:
    """Refresh gold after silver changed (or when a model is behind), incrementally from ``changes`` unless
    silver changed without gold before (a rebuild, perhaps interrupted): then in full. The outbox rows get
    the source commit times of the batch's rows."""
    stale = bool(_state(con, GOLD_STALE))
    if not (_silver_changed(result, changes) or stale or behind):
        return
    _refresh_and_mark(con, result, models, behind, None if stale else changes, tests)
    stamp_source_times(con, result.version or 0, source_times)
    write_state(con, GOLD_STALE, 0)


def _mark_failed_tables(con: duckdb.DuckDBPyConnection, result: BatchResult) -> None:
    """Keep ``cdcwh.state``'s failed marks of silver tables: set for the tables failed in this batch (the
    first batch each failed), cleared for the ones applied."""
    marked = failed_tables(con)
    for name in sorted(result.failed_tables):
        write_state(con, SILVER_FAILED + name, marked.get(name, result.batch_id or 0))
    for name in sorted(result.silver.keys() & marked.keys()):
        con.execute("DELETE FROM cdcwh.state WHERE name = ?", [SILVER_FAILED + name])
        log.info("silver.%s caught up (failed since batch %d)", name, marked[name])


def run_gold_batch(
    con: duckdb.DuckDBPyConnection, models: list[GoldModel], tests: Sequence[TestSpec] = ()
) -> BatchResult:
    """A batch that only recomputes gold (after a rebuild of silver), recorded like any other and gated by
    ``tests`` like any other: a held mart stays held (at its last passing state)."""
    started = datetime.now(UTC)
    behind = models_behind(con, models)

    def work(result: BatchResult) -> None:
        _refresh_and_mark(con, result, models, behind, None, tests)
        gate_gold(con, result, tests)
        write_state(con, GOLD_STALE, 0)
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
    other failure rolls the batch back, records it in ``cdcwh.batches`` under its own id, and raises. A redo
    keeps the batch's version; a failed batch's version is never published (its retry draws a new one)."""
    failed: dict[str, str] = {}
    tables_failed: dict[str, str] = {}
    held: dict[str, list[TestResult]] = {}
    broken: dict[str, str] = {}
    version = next_version(con)
    while True:
        result = BatchResult(batch_id=batch_id, version=version, failed=dict(failed))
        result.failed_tables = dict(tables_failed)
        result.held = dict(held)
        result.broken_tests = dict(broken)
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
        except GateHeld as gate:
            con.rollback()
            for model, failures in sorted(gate.held.items()):
                tests = ", ".join(f"{f.test_id} ({f.failing_rows} failing rows)" for f in failures)
                log.error(
                    "batch %d: gold.%s held by data quality test(s) %s; redoing the batch without it and the "
                    "models that read it (the mart stays at its last passing state)",
                    batch_id,
                    model,
                    tests,
                )
                failed[model] = f"held by data quality test(s) {tests}"
                held[model] = failures
        except TestError as failure:
            con.rollback()
            log.error("batch %d: %s; redoing the batch with the test failing unrun", batch_id, failure)
            broken[failure.spec.test_id] = failure.error
        except TableFailed as failure:
            con.rollback()
            log.error(
                "batch %d: silver.%s failed (%s); redoing the batch without it, its watermarks stay",
                batch_id,
                failure.table,
                failure.error,
            )
            tables_failed[failure.table] = failure.error
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
    tests: Sequence[TestSpec] = (),
) -> None:
    """Refresh gold and keep ``cdcwh.state``'s behind marks: set for the models failed or skipped (the first
    batch each missed), cleared for the ones that refreshed (in full, since they were behind)."""
    result.gold, result.skipped = refresh_gold(
        con,
        models,
        result.version or 0,
        changes,
        failed=result.failed,
        behind=set(behind),
        lagging=failed_tables(con).keys() | result.failed_tables.keys(),
        tested_against=relations_tested(tests),
    )
    for name in sorted(result.failed.keys() | result.skipped.keys()):
        write_state(con, GOLD_BEHIND + name, behind.get(name, result.batch_id or 0))
    for model in result.gold:
        if model.name in behind:
            con.execute("DELETE FROM cdcwh.state WHERE name = ?", [GOLD_BEHIND + model.name])
            log.info("gold.%s caught up (behind since batch %d)", model.name, behind[model.name])


def _record_batch(con: duckdb.DuckDBPyConnection, result: BatchResult, started: datetime) -> None:
    """Record the batch: its id and version in ``cdcwh.state`` (the next batch draws above them), and its
    audit rows, ``cdcwh.batches`` and one ``cdcwh.batch_models`` row per silver table and gold model, a failed
    or skipped model with its status and error."""
    write_state(con, "batch_id", result.batch_id or 0)
    write_state(con, VERSION, result.version or 0)
    problems = [f"silver.{name} failed: {error}" for name, error in result.failed_tables.items()]
    problems += [f"gold.{name} failed: {error}" for name, error in result.failed.items()]
    problems += [f"gold.{name} skipped: {why}" for name, why in result.skipped.items()]
    con.execute(
        "INSERT INTO cdcwh.batches (batch_id, started_at, ended_at, status, error, bronze_rows, "
        "gold_changes, version) VALUES (?, ?, now(), ?, ?, ?, ?, ?)",
        [
            result.batch_id,
            started,
            result.status,
            "; ".join(problems)[:2000] or None,
            result.bronze_rows,
            result.gold_changes,
            result.version,
        ],
    )
    insert = "INSERT INTO cdcwh.batch_models (batch_id, model, rows_in, rows_out, status, error)"
    rows: list[list[object]] = [
        [result.batch_id, f"silver.{name}", result.silver_rows_in.get(name, 0), applied, "ok", None]
        for name, applied in result.silver.items()
    ]
    rows += [
        [result.batch_id, f"silver.{name}", 0, 0, "failed", e] for name, e in result.failed_tables.items()
    ]
    rows += [
        [result.batch_id, model.name, model.rows, model.upserts + model.deletes, "ok", None]
        for model in result.gold
    ]
    rows += [
        [result.batch_id, name, 0, 0, "held" if name in result.held else "failed", error]
        for name, error in result.failed.items()
    ]
    rows += [[result.batch_id, name, 0, 0, "skipped", why] for name, why in result.skipped.items()]
    if rows:
        insert_rows(con, insert, rows)
    _record_quality(con, result)


def _record_quality(con: duckdb.DuckDBPyConnection, result: BatchResult) -> None:
    """The batch's test results into ``cdcwh.dq_results``, and the gate marks of ``cdcwh.state``: set for
    the models held (the first batch each held), deleted for the models that refreshed."""
    results = [*result.dq, *(r for failures in result.held.values() for r in failures)]
    if results:
        ensure_tables(con)
        record_results(con, results)
    for name in sorted(result.held):
        if read_state(con, GATE_HELD + name) is None:
            write_state(con, GATE_HELD + name, result.batch_id or 0)
    for model in result.gold:
        con.execute("DELETE FROM cdcwh.state WHERE name = ?", [GATE_HELD + model.name])


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
        metrics.TRANSFORM_MODEL_FAILED.labels(name).set(0 if name in result.held else 1)
        metrics.TRANSFORM_MODEL_BEHIND.labels(name).set(1)
    observe([*result.dq, *(r for failures in result.held.values() for r in failures)])
    for model in result.gold:
        metrics.DQ_GATE_HELD.labels(model.name).set(0)
    for name in result.held:
        metrics.DQ_GATE_HELD.labels(name).set(1)
    for name in result.skipped:
        metrics.TRANSFORM_MODEL_FAILED.labels(name).set(0)
        metrics.TRANSFORM_MODEL_BEHIND.labels(name).set(1)
    for name in result.failed_tables:
        metrics.TRANSFORM_TABLE_FAILURES.labels(f"silver.{name}").inc()


def record_failure(con: duckdb.DuckDBPyConnection, batch_id: int, started: datetime, exc: Exception) -> None:
    """Record a rolled-back batch (outside its transaction). The row keeps ``batch_id``: the retry takes the
    next id (``next_batch_id``), so it never collides with this row. It has no version: nothing of it was
    published."""
    metrics.ERRORS.labels("transform", metrics.error_kind(exc)).inc()
    try:
        con.execute(
            "INSERT OR REPLACE INTO cdcwh.batches (batch_id, started_at, ended_at, status, error, "
            "bronze_rows, gold_changes, version) VALUES (?, ?, now(), 'failed', ?, NULL, NULL, NULL)",
            [batch_id, started, describe(exc)],
        )
    except duckdb.Error as audit_error:
        log.error("could not record the failed batch %d: %s", batch_id, audit_error)


def observe_freshness(slices: list[BronzeSlice]) -> None:
    now = time.time()
    for piece in slices:
        if piece.rows.num_rows:
            metrics.observe_freshness("gold", piece.rows["__source_ts"], now)
