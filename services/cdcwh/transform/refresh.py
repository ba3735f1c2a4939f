"""Refresh the gold models of one batch, in dependency order, inside the batch's transaction (``batch.py``).

A model is refreshed once its inputs exist: the silver tables and marts its SQL reads, and the relations its
``error`` data quality tests read (a ``relationships`` target). Until then it waits, unless it is built
already: then it is skipped and marked behind, so that it catches up in full. A model that raises raises
``ModelFailed``; the batch is redone without it (DuckDB has no savepoints).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.models import GoldModel
from cdcwh.transform.gold import ModelResult, refresh_model
from cdcwh.warehouse import ChangeSet

log = logging.getLogger(__name__)

SOURCE_TS_SAMPLE = 256
_WAITING_REPORTED: set[tuple[str, tuple[tuple[str, str], ...]]] = set()


# errors that are not a model's: the database itself failed, and the whole batch with it
NOT_THE_MODELS = (duckdb.FatalException, duckdb.InternalException)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class ModelFailed(Exception):
    """A gold model's refresh raised. DuckDB aborts the whole transaction on an error and has no savepoints,
    so the batch is rolled back and redone without the model (and the models that read it)."""

    def __init__(self, model: str, cause: Exception) -> None:
        self.model = model
        self.error = describe(cause)
        super().__init__(f"gold.{model}: {self.error}")


def refresh_gold(
    con: duckdb.DuckDBPyConnection,
    models: list[GoldModel],
    version: int,
    changes: ChangeSet | None = None,
    *,
    failed: Mapping[str, str] | None = None,
    behind: Collection[str] = (),
    lagging: Collection[str] = (),
    tested_against: Mapping[str, frozenset[tuple[str, str]]] | None = None,
) -> tuple[list[ModelResult], dict[str, str]]:
    """Refresh every model whose silver inputs exist (a mart over a table that never had a row waits): in
    full, or with the batch's ``changes`` only the rows they touch where the model says how (gold.py); the
    ``behind`` ones in full. A model whose error tests read a relation that will not exist after the batch
    (``tested_against``: the ``relationships`` target of a mart, say, before its first row) waits too: its
    rows cannot be checked yet. The ``failed`` ones are left out, and so is every model that reads one of
    them (directly or through another) or a ``lagging`` silver table (whose bronze rows failed to apply):
    returns the results and those skipped (model -> why). A model that raises raises ModelFailed."""
    failed = failed or {}
    tested_against = tested_against or {}
    existing = {
        (str(schema), str(name))
        for schema, name in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    }
    available = _available_after(models, existing, failed.keys(), lagging, tested_against)
    results: list[ModelResult] = []
    skipped: dict[str, str] = {}
    for model in models:
        if model.name in failed:
            continue
        behind_silver = sorted(
            f"{schema}.{name}"
            for schema, name in model.reads
            if schema.startswith("silver") and name in lagging
        )
        if behind_silver:
            skipped[model.name] = "reads " + ", ".join(behind_silver) + ", whose bronze rows failed to apply"
            continue
        upstream = sorted(model.depends_on & (failed.keys() | skipped.keys()))
        if upstream:
            skipped[model.name] = (
                "reads " + ", ".join(f"gold.{name}" for name in upstream) + ", not refreshed"
            )
            continue
        untestable = sorted(ref for ref in tested_against.get(model.name, ()) if ref not in available)
        if untestable and ("gold", model.name) in existing:
            # a built mart cannot wait unnoticed: it would miss this batch's changes; behind, it catches up in
            # full once it can be tested
            skipped[model.name] = (
                "its data quality tests read "
                + ", ".join(".".join(ref) for ref in untestable)
                + ", not in the warehouse"
            )
            continue
        missing = [ref for ref in model.reads if ref not in existing] + untestable
        if missing:
            waiting = (model.name, tuple(missing))
            # said once per process at warning level: a model whose silver input never appears (a table
            # renamed by a new warehouse file, a typo in the SQL) must not stay silent
            level = logging.DEBUG if waiting in _WAITING_REPORTED else logging.WARNING
            _WAITING_REPORTED.add(waiting)
            log.log(
                level,
                "gold.%s waits for %s (not in the warehouse yet: no rows arrived, or the table has another "
                "name, see cdcwh.silver_tables; a relation its data quality tests read counts too)",
                model.name,
                ", ".join(".".join(ref) for ref in missing),
            )
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


def _available_after(
    models: list[GoldModel],
    existing: Collection[tuple[str, str]],
    failed: Collection[str],
    lagging: Collection[str],
    tested_against: Mapping[str, frozenset[tuple[str, str]]],
) -> set[tuple[str, str]]:
    """The relations that exist once the batch's models are refreshed: the existing ones and every model
    that will be built, by the rules of ``refresh_gold`` (not failed, no lagging silver input, every mart it
    reads built too, its inputs and tested relations among the available ones). The largest such set, so
    that two marts testing each other's keys are built together, and tested after both refreshed."""
    candidates = {
        model.name: model
        for model in models
        if model.name not in failed
        and not any(schema.startswith("silver") and name in lagging for schema, name in model.reads)
    }
    marts = {model.name for model in models}
    while True:
        available = {*existing, *(("gold", name) for name in candidates)}
        keep = {
            name: model
            for name, model in candidates.items()
            if model.reads <= available
            and tested_against.get(name, frozenset()) <= available
            and model.depends_on & marts <= candidates.keys()
        }
        if len(keep) == len(candidates):
            return available
        candidates = keep


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
