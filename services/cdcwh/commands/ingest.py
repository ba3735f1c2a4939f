"""``cdcwh ingest``: Debezium topics -> Iceberg bronze."""

from __future__ import annotations

import argparse

from cdcwh.config import Settings
from cdcwh.ingest.service import run_ingest
from cdcwh.metrics import serve_metrics


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.until_caught_up:
        serve_metrics(settings, "ingest")
    return run_ingest(settings, until_caught_up=args.until_caught_up, idle_s=args.idle_seconds)
