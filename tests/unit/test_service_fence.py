"""No service package imports another: each one's ruff.toml bans the other three (TID251), and the shared
adapters (bronze, warehouse, goldfeed, kafka, ...) are importable from any of them. Checked with ruff itself
on code given on stdin as if it were a file of the package, so nothing is written to the tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"
SERVICES = ("ingest", "transform", "sink", "source")

pytestmark = pytest.mark.skipif(not RUFF.exists(), reason=f"ruff is not installed beside {sys.executable}")


def banned(package: str, source: str) -> list[str]:
    """The TID251 findings of ``source`` checked as ``services/cdcwh/<package>/probe.py``."""
    done = subprocess.run(
        [
            str(RUFF),
            "check",
            "--no-cache",
            "--select",
            "TID251",
            "--output-format",
            "concise",
            "--stdin-filename",
            f"services/cdcwh/{package}/probe.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return [line for line in done.stdout.splitlines() if "TID251" in line]


@pytest.mark.parametrize("package", SERVICES)
def test_a_service_importing_another_fails_the_lint(package: str) -> None:
    for other in SERVICES:
        if other == package:
            continue
        for line in (f"from cdcwh.{other}.service import x\n", f"import cdcwh.{other}\n"):
            assert banned(package, line), f"{package}/ may import {line.strip()}"
        assert banned(package, f"from cdcwh.{other} import service\n")


@pytest.mark.parametrize("package", SERVICES)
def test_the_shared_adapters_and_the_own_package_are_allowed(package: str) -> None:
    source = (
        "from cdcwh.bronze.catalog import open_catalog\nfrom cdcwh.warehouse import quote\n"
        "from cdcwh.goldfeed import decode\nfrom cdcwh.kafka import client_config\nfrom cdcwh import faults\n"
        f"from cdcwh.{package} import service\n"
    )
    assert banned(package, source) == []
