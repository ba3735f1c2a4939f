"""``cdcwh ingest``: Debezium topics -> Iceberg bronze."""

from __future__ import annotations

import argparse

from cdcwh.commands.args import add_catch_up
from cdcwh.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "ingest",
        help="consume the Debezium topics and land every change in the Iceberg bronze tables",
        description="Consume the topics matching CDCWH_KAFKA__TOPICS, decode and validate each change event, "
        "append it to its bronze table exactly once, and quarantine bad records (bronze._quarantine and "
        "<topic>.dlq). Runs until SIGTERM/Ctrl-C, which flushes and commits before exiting.",
    )
    add_catch_up(
        parser, "land everything currently in the topics, then exit 0 (batch mode for backfills and tests)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.ingest.service import run_ingest  # quixstreams and pyiceberg: only for this command
    from cdcwh.metrics import serve_metrics

    if not args.until_caught_up:
        serve_metrics(settings, "ingest")
    return run_ingest(settings, until_caught_up=args.until_caught_up, idle_s=args.idle_seconds)
