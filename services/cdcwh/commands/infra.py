"""``cdcwh broker`` and ``cdcwh postgres``: embedded services in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

from cdcwh.commands.output import make_console
from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedBroker, EmbeddedPostgres
from cdcwh.redaction import redact_dsn
from cdcwh.stopping import stop_on_signals

console = make_console()


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = sub.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker in the foreground",
        description="Start the embedded broker (Tansu, memory-only) on 127.0.0.1 and record its address in "
        "the data dir, so other cdcwh commands with the same CDCWH_DATA_DIR use it. Ctrl-C stops it.",
    )
    broker.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    broker.set_defaults(handler=run_broker)
    postgres = sub.add_parser(
        "postgres",
        help="run the embedded PostgreSQL in the foreground",
        description="Start the embedded PostgreSQL (data in <data_dir>/postgres, Unix socket only) "
        "and record its URI in the data dir, so other cdcwh commands with the same CDCWH_DATA_DIR use it. "
        "Ctrl-C stops it.",
    )
    postgres.set_defaults(handler=run_postgres)


def wait_for_stop_signal(alive: Callable[[], bool]) -> bool:
    """Block until SIGINT or SIGTERM (True), or until ``alive`` says the wrapped server died (False)."""
    stop = threading.Event()
    stop_on_signals(stop, "stopping")
    while not stop.wait(1.0):
        if not alive():
            return False
    return True


def run_broker(args: argparse.Namespace, settings: Settings) -> int:
    broker = EmbeddedBroker(settings.run_dir, settings.data_dir / "logs", port=args.port)
    record = broker.start()
    try:
        console.print(f"embedded broker listening on {record.address} (pid {record.pid}, memory-only)")
        console.print(f"cdcwh commands with CDCWH_DATA_DIR={settings.data_dir} find it on their own;")
        console.print(
            f"from another data dir: export CDCWH_KAFKA__BOOTSTRAP_SERVERS={record.address} "
            "CDCWH_KAFKA__SESSION_TIMEOUT_MS=6000 CDCWH_KAFKA__HEARTBEAT_INTERVAL_MS=500"
        )
        console.print("Ctrl-C stops it (its topics are lost: bronze is the system of record).")
        if not wait_for_stop_signal(lambda: broker.process is not None and broker.process.poll() is None):
            code = broker.process.returncode if broker.process is not None else None
            console.print(f"the embedded broker exited (code {code}); see {broker.log_path}")
            return 1
    finally:
        broker.stop()
        console.print("embedded broker stopped")
    return 0


def run_postgres(args: argparse.Namespace, settings: Settings) -> int:
    postgres = EmbeddedPostgres(settings.data_dir, settings.run_dir)
    record = postgres.start()
    try:
        console.print(f"embedded PostgreSQL running (pid {record.pid}), data in {postgres.pgdata}")
        console.print(f"connect: psql '{redact_dsn(record.address, placeholder=None)}'")
        console.print(f"cdcwh commands with CDCWH_DATA_DIR={settings.data_dir} find it on their own.")
        console.print("Ctrl-C stops it (its data is kept).")
        if not wait_for_stop_signal(lambda: record.alive):
            console.print(
                f"the embedded PostgreSQL (pid {record.pid}) exited; its data is in {postgres.pgdata}"
            )
            return 1
    finally:
        postgres.stop()
        console.print("embedded PostgreSQL stopped")
    return 0
