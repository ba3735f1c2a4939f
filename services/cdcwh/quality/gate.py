"""The gate: batch-scope tests after a transform batch refreshed gold, and the operator's one-time bypass.

The transform (``transform/batch.py``) calls ``check_gold`` after every model of the batch refreshed (so a
``relationships`` test sees the batch's dimension rows) and before the commit. The rows a batch touched are
the ones it stamped with its version (``_version``); for silver, the rows with a ``__seq`` above the one
the batch started from. An ``error`` test failing on a gold model holds that model: the transform rolls the
batch back and redoes it without the model (and the models reading it), which leaves the mart, its outbox
rows and so PostgreSQL at the last passing state, and marks it behind: every later batch recomputes it in
full and tests it again, on all its rows while it is held, so it catches up with nothing lost once the data
passes. A model with a ``relationships`` test on a model the batch changed is tested too, on the rows whose
parent the batch deleted (``models_to_check``, ``compile.py``). Silver is never held.

``cdcwh gate bypass <model> --reason ...`` stores a request in ``cdcwh.gate_bypass``; the next batch that
refreshes the model uses it up (deletes it in its transaction) and lets the model's changes through even
when an error test fails: it logs the reason and records a ``gate_bypass`` row in ``cdcwh.dq_results``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from cdcwh.quality.compile import foreign_relations
from cdcwh.quality.results import TestResult
from cdcwh.quality.runner import Catalog, ensure_tables, failed_result, run_test
from cdcwh.quality.spec import Relationships, TestSpec

log = logging.getLogger(__name__)


@dataclass
class GateOutcome:
    results: list[TestResult] = field(default_factory=list)
    # gold models an error test holds (model -> its failing results), bypassed ones excluded
    held: dict[str, list[TestResult]] = field(default_factory=dict)
    # gold models whose failures a bypass let through (model -> reason)
    bypassed: dict[str, str] = field(default_factory=dict)


def request_bypass(con: duckdb.DuckDBPyConnection, model: str, reason: str) -> None:
    ensure_tables(con)
    con.execute(
        "INSERT OR REPLACE INTO cdcwh.gate_bypass VALUES (?, ?, ?)", [model, reason, datetime.now(UTC)]
    )


def pending_bypasses(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute("SELECT model, reason FROM cdcwh.gate_bypass").fetchall()
    return {str(model): str(reason) for model, reason in rows}


class TestError(Exception):
    """A test's query raised inside a batch (a type mismatch in its expression, say). DuckDB aborts the
    transaction on any error, so the transform redoes the batch with the test marked broken: it then fails
    (saying why) without running, which holds its gold model like any error failure."""

    __test__ = False

    def __init__(self, spec: TestSpec, cause: Exception) -> None:
        self.spec = spec
        self.error = f"{type(cause).__name__}: {cause}"[:1000]
        super().__init__(f"data quality test {spec.test_id}: {self.error}")


def models_to_check(
    specs: Iterable[TestSpec], changed: Collection[str], refreshed: Collection[str]
) -> set[str]:
    """The refreshed gold models a batch tests: those it ``changed``, and those with a ``relationships`` test
    on a changed model (a parent row deleted under child rows the batch did not touch)."""
    children = {
        spec.model
        for spec in specs
        if spec.layer == "gold" and isinstance(spec.args, Relationships) and spec.args.target in changed
    }
    return (set(changed) | children) & set(refreshed)


def relations_tested(specs: Iterable[TestSpec]) -> dict[str, frozenset[tuple[str, str]]]:
    """Gold model -> the relations its ``error`` tests read besides the model itself (a ``relationships``
    target): the transform builds a model only once they exist, as it waits for the silver tables it reads."""
    tested: dict[str, set[tuple[str, str]]] = {}
    for spec in specs:
        if spec.layer != "gold" or spec.severity != "error":
            continue
        foreign = foreign_relations(spec)
        if foreign:
            tested.setdefault(spec.model, set()).update(foreign)
    return {model: frozenset(relations) for model, relations in tested.items()}


def run_scoped(
    con: duckdb.DuckDBPyConnection,
    specs: Sequence[TestSpec],
    models: Iterable[str],
    scope: str,
    batch_id: int,
    broken: Mapping[str, str] | None = None,
    changes: str | None = None,
) -> list[TestResult]:
    """The batch-scope tests of ``models`` on the rows ``scope`` selects (``relationships`` also on the rows
    whose parent the gold ``changes`` deleted); the ``broken`` ones (test id -> error) fail without running.
    TestError when a test's query raises."""
    wanted = set(models)
    broken = broken or {}
    ran_at = datetime.now(UTC)
    run_id = f"batch:{batch_id}"
    catalog = Catalog.read(con)
    results = []
    for spec in specs:
        if spec.model not in wanted:
            continue
        if spec.test_id in broken:
            results.append(failed_result(spec, run_id, "batch", batch_id, ran_at, broken[spec.test_id]))
            continue
        try:
            result = run_test(
                con,
                spec,
                run_id=run_id,
                scope=scope,
                batch_id=batch_id,
                ran_at=ran_at,
                changes=changes,
                catalog=catalog,
            )
        except (duckdb.FatalException, duckdb.InternalException):
            raise
        except duckdb.Error as exc:
            raise TestError(spec, exc) from exc
        if result is not None:
            results.append(result)
    return results


def check_gold(
    con: duckdb.DuckDBPyConnection,
    specs: Sequence[TestSpec],
    models: Iterable[str],
    *,
    version: int,
    batch_id: int,
    bypass: dict[str, str] | None = None,
    broken: Mapping[str, str] | None = None,
    held: Collection[str] = (),
) -> GateOutcome:
    """Run the batch-scope tests of the refreshed gold ``models`` on the rows of ``version`` (a
    ``relationships`` test also on the rows whose parent the batch deleted), and of the ``held`` ones on all
    their rows; the models an error failure holds, unless ``bypass`` names them (then the bypass is consumed
    and recorded)."""
    refreshed = set(models) | set(held)
    changes = f"o.version = {int(version)}"
    scoped = set(models) - set(held)
    outcome = GateOutcome(
        run_scoped(con, specs, scoped, f"_version = {int(version)}", batch_id, broken, changes)
        + run_scoped(con, specs, set(held), "TRUE", batch_id, broken)
    )
    bypass = bypass or {}
    for result in outcome.results:
        if result.gates:
            outcome.held.setdefault(result.model, []).append(result)
    for model in sorted(refreshed & bypass.keys()):  # a request is used by the model's next batch
        con.execute("DELETE FROM cdcwh.gate_bypass WHERE model = ?", [model])
        if model not in outcome.held:
            log.info("batch %d: gold.%s passed its tests; its gate bypass was not needed", batch_id, model)
            continue
        failures = outcome.held.pop(model)
        reason = bypass[model]
        outcome.bypassed[model] = reason
        log.warning(
            "batch %d: gate of gold.%s bypassed (%s); published despite %s",
            batch_id,
            model,
            reason,
            ", ".join(f.test_id for f in failures),
        )
        outcome.results.append(
            TestResult(
                run_id=f"batch:{batch_id}",
                batch_id=batch_id,
                test_id=f"{model}.gate_bypass",
                model=model,
                column_name=None,
                test="gate_bypass",
                severity="warn",
                status="warn",
                failing_rows=sum(f.failing_rows for f in failures),
                sample=[{"reason": reason, "tests": [f.test_id for f in failures]}],
                scope="batch",
                ran_at=datetime.now(UTC),
            )
        )
    return outcome
