"""``cdcwh run``: the whole pipeline, starting the embedded broker and Postgres when none is configured."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from rich.console import Console

from cdcwh.config import Settings
from cdcwh.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    kafka_bootstrap,
    postgres_dsn,
)
from cdcwh.embedded import broker as embedded_broker
from cdcwh.embedded import postgres as embedded_postgres
from cdcwh.embedded.registry import read_record
from cdcwh.metrics import serve_metrics
from cdcwh.supervisor import Supervisor, run_until_caught_up

console = Console(stderr=True)


@contextlib.contextmanager
def infrastructure(settings: Settings) -> Iterator[None]:
    """Start the embedded broker and Postgres unless configured or already running for this data dir."""
    with contextlib.ExitStack() as stack:
        if settings.kafka.bootstrap_servers is None:
            record = read_record(settings.run_dir, embedded_broker.NAME)
            if record is None or not record.alive:
                broker = stack.enter_context(EmbeddedBroker(settings.run_dir, settings.data_dir / "logs"))
                console.print(f"embedded broker on {broker.address}")
        if settings.postgres.dsn is None:
            record = read_record(settings.run_dir, embedded_postgres.NAME)
            if record is None or not record.alive:
                postgres = stack.enter_context(EmbeddedPostgres(settings.data_dir, settings.run_dir))
                console.print(f"embedded PostgreSQL: psql '{postgres.dsn}'")
        yield


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the service processes: this one's, with the data dir made absolute."""
    env = dict(os.environ)
    env["CDCWH_DATA_DIR"] = str(settings.data_dir.resolve())
    kafka_bootstrap(settings)  # fail fast here rather than in three children
    postgres_dsn(settings)
    return env


def run(args: argparse.Namespace, settings: Settings) -> int:
    with infrastructure(settings):
        env = child_env(settings)
        if args.until_caught_up:
            run_until_caught_up(env)
            console.print("caught up: everything in the topics is in PostgreSQL")
            return 0
        supervisor = Supervisor(settings.data_dir / "logs", env)
        serve_metrics(settings, "supervisor")  # cdcwh_errors_total{service=<child>, kind="exited"}
        console.print("running ingest, transform and sink; Ctrl-C stops them all")
        return supervisor.run_until_signal()
