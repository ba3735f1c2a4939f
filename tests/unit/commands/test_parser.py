"""Each command module registers its own parser and handler; building the parser stays light."""

from __future__ import annotations

import json
import subprocess
import sys

from cdcwh.cli import build_parser

COMMANDS = {
    "generate": [],
    "broker": [],
    "postgres": [],
    "demo": [],
    "ingest": [],
    "transform": [],
    "query": ["SELECT 1"],
    "sink": [],
    "run": [],
    "replay": ["rebuild"],
    "reconcile": [],
    "maintain": [],
    "status": [],
    "source": [],
    "capture": [],
    "serve": [],
    "token": ["--role", "analyst"],
}


def test_every_command_has_its_handler() -> None:
    parser = build_parser()
    for command, rest in COMMANDS.items():
        args = parser.parse_args([command, *rest])
        assert callable(args.handler), command
        assert args.handler.__module__.startswith("cdcwh.commands."), command
    status = parser.parse_args(["status", "--format", "json", "--max-lag", "0", "--max-staleness", "1.5"])
    assert (status.format, status.max_lag, status.max_staleness) == ("json", 0, 1.5)


def test_building_the_parser_loads_no_heavy_library() -> None:
    code = (
        "import json, sys; from cdcwh.cli import build_parser; build_parser(); "
        "heavy = ('quixstreams', 'pyiceberg', 'duckdb', 'pyarrow'); "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
