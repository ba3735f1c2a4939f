"""``cdcwh test`` (run the data quality tests now, as ``dbt test``) and ``cdcwh gate bypass``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING

from cdcwh.commands.output import write_json
from cdcwh.config import Settings
from cdcwh.errors import ConfigError

if TYPE_CHECKING:
    from cdcwh.quality.results import TestResult

LABELS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    test = sub.add_parser(
        "test",
        help="run the data quality tests of sql/gold/*.yml and sql/silver/*.yml now; exit 1 if an error "
        "test fails",
        description="Run every data quality test in full on the warehouse (opened read-only) and print one "
        "line per test: PASS, WARN or FAIL, its id and its failing row count, with a sample of up to 5 "
        "failing rows. Exit 0 when no error test fails, 1 when one does, 2 when a test file is invalid "
        "(docs/data-quality.md). Models not built yet are skipped.",
    )
    test.add_argument(
        "--select",
        nargs="+",
        action="extend",
        default=[],
        metavar="MODEL",
        help="only these models (a mart's name, silver.<table>) or test ids",
    )
    test.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    test.set_defaults(handler=run)

    gate = sub.add_parser(
        "gate",
        help="bypass a gold model's data quality gate for its next batch, with a reason",
        description="Let the next transform batch that refreshes MODEL publish its changes even when an "
        "error test fails on them. The failures are still recorded in cdcwh.dq_results, and the bypass "
        "with its reason is logged and recorded; it is used once (docs/data-quality.md).",
    )
    actions = gate.add_subparsers(dest="gate_action", metavar="ACTION", required=True)
    bypass = actions.add_parser("bypass", help="bypass MODEL's gate for one batch")
    bypass.add_argument("model", help="a gold model (mart) name")
    bypass.add_argument("--reason", required=True, help="why (logged and recorded)")
    bypass.set_defaults(handler=run_bypass)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.quality.runner import run_tests, select
    from cdcwh.quality.spec import load_tests
    from cdcwh.warehouse import open_warehouse

    every = load_tests(settings.sql_path)
    specs = select(every, args.select)
    known = {s.model for s in every} | {s.test_id for s in specs}
    unknown = sorted(set(args.select) - known)
    if unknown:
        raise ConfigError(f"--select: no tests for {', '.join(unknown)}")
    con = open_warehouse(settings, read_only=True)
    try:
        results = run_tests(con, specs)
    finally:
        con.close()
    if args.format == "json":
        write_json({"results": [_document(r) for r in results], "failed": _failed(results)})
    else:
        print_results(results)
    return 1 if _failed(results) else 0


def _failed(results: list[TestResult]) -> int:
    return sum(1 for r in results if r.status == "fail")


def _document(result: TestResult) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in ("run_id", "batch_id")}


def print_results(results: list[TestResult]) -> None:
    out = sys.stdout
    for r in results:
        out.write(f"{LABELS[r.status]}  {r.test_id}  ({r.failing_rows} failing rows)\n")
        for row in r.sample if r.status != "pass" else []:
            out.write(f"      {json.dumps(row, ensure_ascii=False)}\n")
    counts = {s: sum(1 for r in results if r.status == s) for s in LABELS}
    out.write(
        f"{len(results)} tests: {counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed\n"
    )


def run_bypass(args: argparse.Namespace, settings: Settings) -> int:
    bypass_gates(settings, [args.model], args.reason)
    sys.stdout.write(f"gold.{args.model}: the next batch publishes its changes even if an error test fails\n")
    return 0


def bypass_gates(settings: Settings, models: list[str], reason: str | None) -> None:
    """Store a one-time gate bypass for each of ``models`` (``cdcwh gate bypass``, ``cdcwh transform
    --bypass-gate``), logged with its reason."""
    import logging

    from cdcwh.models import load_models
    from cdcwh.quality.gate import request_bypass
    from cdcwh.warehouse import open_warehouse

    names = {m.name for m in load_models(settings.sql_path / "gold")}
    for model in models:
        if model not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"gate bypass: {model!r} is not a gold model (one of {known})")
    if not reason or not reason.strip():
        raise ConfigError("gate bypass: --reason must say why")
    con = open_warehouse(settings)
    try:
        for model in models:
            request_bypass(con, model, reason.strip())
    finally:
        con.close()
    for model in models:
        logging.getLogger("cdcwh.quality").warning(
            "gate of gold.%s bypassed for its next batch: %s", model, reason.strip()
        )
