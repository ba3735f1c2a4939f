"""Fixtures for the deploy tests: the repository's deploy files, and Prometheus' own binaries.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package. When missing they are installed
with apt-get (root only); the tests that need them are skipped, with the reason, only when that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _install_prometheus_package() -> str | None:
    """Install Debian's ``prometheus`` package; returns why it could not be, or None."""
    if shutil.which("apt-get") is None:
        return "apt-get not available"
    if os.geteuid() != 0:
        return "not root, cannot apt-get install prometheus"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "prometheus"]):
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return f"{' '.join(args)} failed: {result.stderr[-500:]}"
    return None


def _prometheus_binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        problem = _install_prometheus_package()
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} unavailable: {problem or 'not installed by the prometheus package'}")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _prometheus_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_server() -> str:
    return _prometheus_binary("prometheus")
