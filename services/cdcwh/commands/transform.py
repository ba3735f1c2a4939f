"""``cdcwh transform`` and ``cdcwh query``."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cdcwh.config import Settings
from cdcwh.errors import CdcwhError
from cdcwh.metrics import serve_metrics


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.transform.service import TransformService

    service = TransformService(settings)
    if args.once:
        return service.run_once()
    serve_metrics(settings, "transform")
    return service.run_forever()


def query(args: argparse.Namespace, settings: Settings) -> int:
    import duckdb

    from cdcwh.warehouse import open_warehouse

    con = open_warehouse(settings, read_only=True)
    try:
        try:
            cursor = con.execute(args.sql)
        except duckdb.Error as exc:
            raise CdcwhError(f"query failed: {exc}") from exc
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(args.limit + 1)
    finally:
        con.close()
    table = Table(*columns, title=None, show_lines=False)
    for row in rows[: args.limit]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console = Console()
    console.print(table)
    more = " (more rows not shown; raise --limit)" if len(rows) > args.limit else ""
    console.print(f"{min(len(rows), args.limit)} rows{more}")
    return 0
