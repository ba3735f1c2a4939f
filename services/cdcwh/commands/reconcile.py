"""``cdcwh reconcile``: compare every captured source table with silver (docs/operations.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cdcwh.commands.args import positive_int
from cdcwh.commands.output import make_console
from cdcwh.config import Settings

if TYPE_CHECKING:
    from cdcwh.reconcile import ReconcileResult

console = make_console()
# cdcwh.reconcile.DEFAULT_RANGES / DEFAULT_SHOWN: not imported here, so that building the parser does not load
# duckdb and psycopg for every command
DEFAULT_RANGES = 16
DEFAULT_SHOWN = 50
VALUE_WIDTH = 60


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "reconcile",
        help="compare every captured source table with silver, by count and row hash; exit 1 if they differ",
        description="Compare the source PostgreSQL with silver: per table, row counts and a hash of every "
        "row in key ranges; ranges that differ are compared row by row and the differing keys printed with "
        "both sides. Values are compared by meaning (exact numbers, timestamptz as UTC instants). Exit 0 "
        "when equal, 1 when they differ. Run it on a quiet source after the pipeline caught up.",
    )
    parser.add_argument(
        "--table",
        action="append",
        help="silver table, schema.table or table to compare (repeatable; default: every captured table)",
    )
    parser.add_argument(
        "--ranges",
        type=positive_int,
        default=DEFAULT_RANGES,
        help=f"key ranges per table (default {DEFAULT_RANGES})",
    )
    parser.add_argument(
        "--source-dsn",
        help="the source database (default: CDCWH_SOURCE__DSN, else the embedded source of the data dir)",
    )
    parser.add_argument(
        "--show",
        type=positive_int,
        default=DEFAULT_SHOWN,
        help=f"differences printed per table (default {DEFAULT_SHOWN})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.reconcile import reconcile

    result = reconcile(
        settings,
        source_dsn_override=args.source_dsn,
        tables=args.table,
        ranges=args.ranges,
        max_shown=args.show,
    )
    print_result(result, console)
    return 0 if result.equal else 1


def _cell(value: str | None) -> str:
    if value is None:
        return "NULL"
    return value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 1] + "…"


def print_result(result: ReconcileResult, out: Console) -> None:
    """The differing keys of each table (capped), then one summary line per table."""
    for table in result.tables:
        if table.equal:
            continue
        # every value as Text: source data is shown as it is, never parsed as markup
        grid = Table(title=Text(f"{table.silver_table} ({table.source_table})"), title_justify="left")
        for column in ("key", "column", "source", "silver"):
            grid.add_column(column, overflow="fold")
        for difference in table.differences:
            grid.add_row(
                Text(difference.key_text),
                Text(difference.column),
                Text(_cell(difference.source)),
                Text(_cell(difference.silver)),
            )
        out.print(grid)
        shown = len({d.key_text for d in table.differences})
        if table.differing_keys > shown:
            out.print(f"  ... {table.differing_keys - shown:,} more differing keys not shown (--show)")
    for table in result.tables:
        for note in table.notes:
            out.print(Text(f"{table.silver_table}: {note}", style="dim"), highlight=False)
    for table in result.tables:
        style = "green" if table.equal else "bold red"
        out.print(Text(table.summary(), style=style), highlight=False)
    if not result.tables:
        out.print("no captured tables in cdcwh.silver_tables: nothing to compare")
