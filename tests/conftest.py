"""Tests are marked ``integration`` / ``e2e`` by their directory; the shared fixtures live in pytest plugin
modules under tests/plugins (real broker and PostgreSQL: tests/plugins/infra.py; canary secrets
checked for leaks at the end of the session: tests/plugins/secrets.py), the shared helpers in
tests/support."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.plugins.secrets", "tests.plugins.infra", "tests.plugins.pipeline"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
