"""The outcome of one data quality test run: what the runner produces, the gate reads, and the audit records.

DuckDB keeps them in ``cdcwh.dq_results`` (``RESULTS_TABLE``), written in the transaction of the batch that
ran them; ``audit.dq_results`` in Postgres mirrors that table, keyed the same way, so a replayed batch does
not duplicate a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Severity = Literal["error", "warn"]
Status = Literal["pass", "warn", "fail"]
"""``warn``: a ``warn`` test found failing rows; ``fail``: an ``error`` test did (and gates its model)."""
Scope = Literal["batch", "full"]
"""``batch``: run on the rows a transform batch touched; ``full``: on the whole model (``cdcwh test``)."""

RESULTS_TABLE = """
CREATE TABLE IF NOT EXISTS cdcwh.dq_results (
    run_id VARCHAR NOT NULL,          -- 'batch:<batch_id>' for a transform batch, else a uuid of the run
    batch_id BIGINT,                  -- the transform batch, NULL for an on-demand run
    test_id VARCHAR NOT NULL,         -- stable and unique per test: '<model>.<test>[.<column>][.<n>]'
    model VARCHAR NOT NULL,
    column_name VARCHAR,
    test VARCHAR NOT NULL,            -- unique, not_null, accepted_values, relationships, ...
    severity VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    failing_rows BIGINT NOT NULL,
    sample VARCHAR NOT NULL,          -- JSON array of up to 5 failing rows
    scope VARCHAR NOT NULL,
    ran_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, test_id)
)
"""


@dataclass(frozen=True, slots=True)
class TestResult:
    """One test's outcome on one run."""

    __test__ = False  # not a pytest test class

    run_id: str
    batch_id: int | None
    test_id: str
    model: str
    column_name: str | None
    test: str
    severity: Severity
    status: Status
    failing_rows: int
    sample: list[dict[str, Any]]
    scope: Scope
    ran_at: datetime

    @property
    def gates(self) -> bool:
        """An ``error`` test failed: its model's batch is held."""
        return self.status == "fail"
