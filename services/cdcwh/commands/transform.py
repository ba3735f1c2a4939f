"""``cdcwh transform`` and ``cdcwh query``."""

from __future__ import annotations

import argparse

from cdcwh.commands.args import positive_int
from cdcwh.commands.output import Grid, add_format_option, emit, make_console
from cdcwh.config import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    transform = sub.add_parser(
        "transform",
        help="build silver (current state) and gold (marts) in DuckDB from bronze, in micro-batches",
        description="Every CDCWH_TRANSFORM__INTERVAL_S seconds: apply the new bronze rows to silver, "
        "recompute the gold models of sql/gold, publish their changes to cdcwh.gold.<mart>. SIGTERM/Ctrl-C "
        "stops after the current batch.",
    )
    transform.add_argument(
        "--once", action="store_true", help="process everything new in bronze, then exit 0"
    )
    transform.add_argument(
        "--bypass-gate",
        action="append",
        default=[],
        metavar="MODEL",
        help="let MODEL's next batch through its data quality gate (repeatable; needs --reason; "
        "docs/data-quality.md)",
    )
    transform.add_argument("--reason", help="why the gate is bypassed (logged and recorded)")
    transform.set_defaults(handler=run)
    query = sub.add_parser(
        "query",
        help="run one read query against silver and gold (sandboxed: no files, no writes)",
        description="Run one read query (SELECT, WITH, VALUES, TABLE, FROM, DESCRIBE, SHOW, SUMMARIZE) "
        "against the DuckDB warehouse (schemas silver, silver_history, gold, cdcwh) and print the result. "
        "Anything else (COPY, ATTACH, INSTALL/LOAD, SET, PRAGMA, CALL, EXPLAIN, DDL, DML, several "
        "statements) is refused, and file and network access are off (docs/security.md). "
        "--format json prints one document: "
        '{"columns": [{"name", "type"}], "rows": [[...]], "truncated": bool} (docs/operations.md).',
    )
    query.add_argument("sql", help='e.g. "SELECT * FROM gold.daily_revenue ORDER BY order_date"')
    query.add_argument("--limit", type=positive_int, default=100, help="rows to print (default 100)")
    add_format_option(query)
    query.set_defaults(handler=run_query)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.metrics import serve_metrics
    from cdcwh.transform.service import TransformService

    if args.bypass_gate:
        from cdcwh.commands.test import bypass_gates

        bypass_gates(settings, args.bypass_gate, args.reason)
    service = TransformService(settings)
    if args.once:
        return service.run_once()
    serve_metrics(settings, "transform")
    return service.run_forever()


def run_query(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.sandbox import execute_read_query, open_sandbox

    con = open_sandbox(settings)
    try:
        cursor = execute_read_query(con, args.sql)
        description = cursor.description or []
        rows = cursor.fetchmany(args.limit + 1)
    finally:
        con.close()
    truncated = len(rows) > args.limit
    rows = rows[: args.limit]
    columns = [str(d[0]) for d in description]
    document = {
        "columns": [{"name": str(d[0]), "type": str(d[1])} for d in description],
        "rows": rows,
        "truncated": truncated,
    }
    out = make_console()
    emit(args.format, [Grid("", columns, list(rows))], document, out)
    if args.format == "table":
        more = " (more rows not shown; raise --limit)" if truncated else ""
        out.print(f"{len(rows)} rows{more}")
    elif truncated:
        make_console(stderr=True).print(
            f"more than {args.limit} rows: only the first {args.limit} printed (--limit)"
        )
    return 0
