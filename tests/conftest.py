"""Tests are marked ``integration`` / ``e2e`` by their directory; the shared fixtures live in pytest plugin
modules under tests/plugins (real broker and PostgreSQL: tests/plugins/infra.py; canary secrets
checked for leaks at the end of the session: tests/plugins/secrets.py), the shared helpers in
tests/support.

Under xdist (``make test``, ``--dist load``) the slowest tests start first, spread over the workers, so that
no worker is left alone with a long one at the end (``_first_chunks``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["tests.plugins.secrets", "tests.plugins.infra", "tests.plugins.pipeline"]

# Property tests run hypothesis's default 100 examples; CDCWH_TEST_HYPOTHESIS=thorough runs 1000 of each
# (a test that sets max_examples itself keeps it).
settings.register_profile("thorough", max_examples=1000)
settings.load_profile(os.environ.get("CDCWH_TEST_HYPOTHESIS", "default"))

# Node id prefixes of the slowest tests, slowest first (``make test ARGS=--durations=40`` on a fresh clone;
# a test's setup counts, e.g. a module's fixture). Only the order of the run depends on this list: a test
# missing from it runs after them, in collection order.
SLOW_FIRST = (
    "tests/integration/ingest/test_bronze_soak.py",
    "tests/e2e/test_chaos.py",
    "tests/e2e/test_cli.py::test_demo",
    "tests/e2e/test_demo_real_source.py::test_demo_captures",
    "tests/integration/quality/test_gate_pipeline.py",
    "tests/e2e/test_demo_real_source.py",
    "tests/integration/ingest/test_ingest_crash.py::test_sigkill_at_random_moments",
    "tests/e2e/test_sink_faults.py",
    "tests/e2e/test_warehouse_loss.py",
    "tests/integration/transform/test_transform_crash.py",
    "tests/integration/deploy/test_prometheus_scrape.py",
    "tests/integration/ingest/test_ingest_crash_compaction.py",
    "tests/integration/transform/test_transform_pipeline.py",
    "tests/e2e/test_replay.py",
    "tests/integration/test_producers_after_broker_reset.py",
    "tests/integration/sink/test_sink_outage.py",
    "tests/integration/ingest/test_bronze_maintenance.py",
    "tests/e2e/test_pipeline_postgres.py",
    "tests/integration/transform/test_gold_full_refresh.py",
    "tests/integration/ingest/test_ingest_avro_live.py",
    "tests/integration/audit/test_anomaly_pipeline.py",
    "tests/integration/transform/test_transform_scenarios.py",
    "tests/integration/transform/test_transform_feed.py",
    "tests/e2e/test_cli.py",
    "tests/integration/source/test_capture.py",
    "tests/integration/ingest/test_ingest_crash.py",
    "tests/integration/ingest/test_ingest_log_reset.py",
    "tests/integration/serve/test_pipeline_api.py",
    "tests/integration/test_logs_and_startup.py",
    "tests/integration/deploy/test_compose.py",
    "tests/integration/audit/test_audit_pipeline.py",
    "tests/integration/test_secrets.py",
    "tests/integration/ingest/test_ingest_bad_input.py",
    "tests/integration/ingest/test_ingest_metrics.py",
    "tests/integration/quality/test_gate_batch.py::test_deleting_a_product_under_order_items_holds_the_fact_mart",
    "tests/integration/transform/test_transform_hold.py",
    "tests/integration/transform/test_transform_real_schemas.py",
    "tests/unit/core/test_rejection.py::test_decode_never_raises",
)


def _rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))


def _first_chunks(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` (slow first) laid out for xdist's ``--dist load``: it hands worker k the k-th run of
    ``chunk`` consecutive tests first (a quarter of its share), then the rest in order as workers free up.
    The slow tests are dealt round-robin, slowest first, to the front of those first chunks, each run of
    tests with the same rank (a module's tests sharing a module-scoped fixture) kept together; the other
    tests keep their collection order, so that modules stay contiguous."""
    chunk = max(len(items) // workers // 4, 2)
    units: list[list[pytest.Item]] = []
    rest: list[pytest.Item] = []
    for item in items:
        rank = _rank(item)
        if rank == len(SLOW_FIRST):
            rest.append(item)
        elif units and _rank(units[-1][0]) == rank:
            units[-1].append(item)
        else:
            units.append([item])
    bins: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for index, unit in enumerate(units):
        bins[index % workers].extend(unit)
    if any(len(b) > chunk for b in bins):
        return items  # more slow tests than the first chunks hold: slowest first is the best left
    ordered: list[pytest.Item] = []
    for slow in bins:
        filler = chunk - len(slow)
        ordered += slow + rest[:filler]
        rest = rest[filler:]
    return ordered + rest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=_rank)  # stable: the rest keep their order
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        items[:] = _first_chunks(items, workers)
