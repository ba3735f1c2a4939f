"""``cdcwh maintain``: one maintenance pass over the bronze tables (ingest runs it between checkpoints)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from cdcwh.commands.output import make_console
from cdcwh.config import Settings

console = make_console()


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "maintain",
        help="compact settled bronze files, merge manifests, remove orphan files (and apply retention)",
        description="One maintenance pass over every bronze table, the quarantine table included: the same "
        "pass ingest runs every CDCWH_ICEBERG__MAINTAIN_INTERVAL_S. Safe while ingest runs: a commit that "
        "conflicts with an append is planned again (docs/bronze.md, 'Maintenance').",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.bronze.catalog import open_catalog
    from cdcwh.ingest.maintenance import maintain_all

    with console.status("maintaining the bronze tables"):
        results = maintain_all(open_catalog(settings), settings.iceberg.namespace, settings.iceberg)
    table = Table(
        "table", "files compacted", "files written", "orphans removed", "rows expired", title="maintain"
    )
    for result in results:
        table.add_row(
            result.table,
            f"{result.files_rewritten:,}",
            f"{result.files_written:,}",
            f"{result.orphans_removed:,}",
            f"{result.rows_expired:,}",
        )
    console.print(table)
    return 0
