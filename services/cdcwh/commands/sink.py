"""``cdcwh sink``: gold change topics -> PostgreSQL marts."""

from __future__ import annotations

import argparse

from cdcwh.config import Settings
from cdcwh.metrics import serve_metrics


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.sink.service import run_sink

    if not args.until_caught_up:
        serve_metrics(settings, "sink")
    return run_sink(settings, until_caught_up=args.until_caught_up, idle_s=args.idle_seconds)
