"""``cdcwh sink``: gold change topics -> PostgreSQL marts."""

from __future__ import annotations

import argparse

from cdcwh.commands.args import add_catch_up
from cdcwh.config import Settings
from cdcwh.metrics import serve_metrics


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sink",
        help="apply the gold change topics to the PostgreSQL marts",
        description="Consume cdcwh.gold.<mart> and upsert/delete the rows of the marts schema in PostgreSQL, "
        "guarded by version, one transaction per batch; Kafka offsets are committed after Postgres commits.",
    )
    add_catch_up(parser, "apply everything currently in the gold topics, then exit")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.sink.service import run_sink

    if not args.until_caught_up:
        serve_metrics(settings, "sink")
    return run_sink(settings, until_caught_up=args.until_caught_up, idle_s=args.idle_seconds)
