"""Pytest plugin: settings for a test that runs the pipeline against the session's broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcwh.config import Settings
from tests.support.pipeline import settings_for


@pytest.fixture
def pipeline_settings(tmp_path: Path, kafka_bootstrap: str, unique_prefix: str) -> Settings:
    """A fresh data dir, topics ``<unique_prefix>.<schema>.<table>`` and consumer groups and gold topics of
    that prefix on the session broker. Derive variants with ``tests.support.pipeline.env_overrides``."""
    return settings_for(tmp_path / "data", kafka_bootstrap, unique_prefix)
