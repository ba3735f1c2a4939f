"""Tests are marked ``integration`` / ``e2e`` by their directory; the shared fixtures live in pytest plugin
modules under tests/plugins (real broker and PostgreSQL: tests/plugins/infra.py), the shared helpers in
tests/support.

Under xdist (``make test``: ``--dist loadgroup --no-loadscope-reorder``) the slowest tests start first, so
that no worker is left alone with a long one at the end, and the tests of a module that share a module-scoped
(or class-, package-scoped) fixture stay on one worker, which then builds it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["tests.plugins.infra", "tests.plugins.pipeline"]

# Property tests run hypothesis's default 100 examples; CDCWH_TEST_HYPOTHESIS=thorough runs 1000 of each
# (a test that sets max_examples itself keeps it).
settings.register_profile("thorough", max_examples=1000)
settings.load_profile(os.environ.get("CDCWH_TEST_HYPOTHESIS", "default"))

# Node id prefixes of the slowest tests, slowest first (``make test ARGS=--durations=40`` on a fresh clone;
# a test's setup counts, e.g. a module's fixture). Only the order of the run depends on this list: a test
# missing from it runs after them, in collection order.
SLOW_FIRST = (
    "tests/integration/ingest/test_bronze_soak.py",
    "tests/integration/transform/test_transform_crash.py",
    "tests/e2e/test_demo_real_source.py::test_demo_captures",
    "tests/e2e/test_cli.py::test_demo",
    "tests/e2e/test_chaos.py",
    "tests/integration/ingest/test_ingest_crash.py::test_sigkill_at_random_moments",
    "tests/e2e/test_warehouse_loss.py",
    "tests/e2e/test_sink_faults.py",
    "tests/e2e/test_demo_real_source.py",
    "tests/integration/overview/test_status.py",
    "tests/e2e/test_cli.py",
    "tests/integration/ingest/test_ingest_crash.py",
    "tests/e2e/test_replay.py",
    "tests/integration/transform/test_transform_scenarios.py",
    "tests/integration/source/test_capture.py",
    "tests/integration/ingest/test_ingest_crash_compaction.py",
    "tests/integration/transform/test_transform_pipeline.py",
    "tests/integration/ingest/test_bronze_maintenance.py",
    "tests/integration/test_logs_and_startup.py",
    "tests/unit/core/test_rejection.py::test_decode_never_raises",
    "tests/integration/transform/test_gold_full_refresh.py",
    "tests/integration/ingest/test_ingest_log_reset.py",
    "tests/integration/transform/test_transform_feed.py",
    "tests/integration/ingest/test_ingest_bad_input.py",
    "tests/integration/transform/test_transform_real_schemas.py",
    "tests/e2e/test_pipeline_postgres.py",
    "tests/integration/ingest/test_ingest_metrics.py",
)

SHARED_SCOPES = ("package", "module", "class")


def _rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        getattr(definition, "scope", "function") in SHARED_SCOPES
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=_rank)  # stable: the rest keep their order
