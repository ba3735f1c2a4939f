"""Fixtures for the deploy tests: the repository's deploy files, and Prometheus' own binaries.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package, a test prerequisite (README,
"Two commands"; ``.ci/run`` installs it when missing). The tests that need them skip, naming the package,
when they are not installed: a fixture never installs packages.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _prometheus_binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.skip(f"{name} not found: install Debian's prometheus package (apt-get install prometheus)")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _prometheus_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_server() -> str:
    return _prometheus_binary("prometheus")
