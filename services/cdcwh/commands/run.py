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
from cdcwh.errors import CdcwhError
from cdcwh.metrics import serve_metrics
from cdcwh.supervisor import Supervisor, run_until_caught_up

console = Console(stderr=True)


class Infrastructure:
    """The embedded broker and Postgres of a ``cdcwh run`` or ``cdcwh demo``: started unless configured or
    already running for the data dir, and watched while the services run (``check``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._reported: set[str] = set()

    def start(self) -> None:
        settings = self.settings
        if settings.kafka.bootstrap_servers is None:
            record = read_record(settings.run_dir, embedded_broker.NAME)
            if record is None or not record.alive:
                self.broker = EmbeddedBroker(settings.run_dir, settings.data_dir / "logs")
                self.broker.start()
                console.print(f"embedded broker on {self.broker.address}")
        if settings.postgres.dsn is None:
            record = read_record(settings.run_dir, embedded_postgres.NAME)
            if record is None or not record.alive:
                self.postgres = EmbeddedPostgres(settings.data_dir, settings.run_dir)
                self.postgres.start()
                console.print(f"embedded PostgreSQL: psql '{self.postgres.dsn}'")

    def check(self) -> None:
        """``watch``, but a failed restart (the port taken meanwhile) is reported and tried again next time
        rather than stopping the run and its services."""
        try:
            self.watch()
        except CdcwhError as exc:
            console.print(f"could not restart an embedded service: {exc}; trying again shortly")

    def watch(self) -> None:
        """Restart an embedded service this run started if it died (the broker on its old address, empty:
        ingest lands its new log as a new incarnation); for one that another command started, say once
        that it is down."""
        settings = self.settings
        broker = self.broker
        if broker is not None and (broker.process is None or broker.process.poll() is not None):
            if broker.process is not None:  # died now (not a restart that failed before)
                address = broker.address
                console.print(
                    f"the embedded broker exited (code {broker.process.returncode}); restarting it on "
                    f"{address}: its topics are gone, run `cdcwh replay sink` once it is caught up"
                )
                broker.stop()
                broker = self.broker = EmbeddedBroker(
                    settings.run_dir, settings.data_dir / "logs", port=int(address.rsplit(":", 1)[1])
                )
            broker.start()
        elif self.broker is None and settings.kafka.bootstrap_servers is None:
            self._report_dead(embedded_broker.NAME, "cdcwh broker")
        if self.postgres is not None and self.postgres.record is not None and not self.postgres.record.alive:
            console.print("the embedded PostgreSQL exited; restarting it (its data is kept)")
            self.postgres.stop()
            self.postgres.start()
        elif self.postgres is None and settings.postgres.dsn is None:
            self._report_dead(embedded_postgres.NAME, "cdcwh postgres")

    def _report_dead(self, name: str, command: str) -> None:
        record = read_record(self.settings.run_dir, name)
        if record is not None and record.alive:
            self._reported.discard(name)
        elif name not in self._reported:
            console.print(f"the embedded {name} of this data dir is not running: start it with `{command}`")
            self._reported.add(name)

    def stop(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()
        if self.broker is not None:
            self.broker.stop()


@contextlib.contextmanager
def infrastructure(settings: Settings) -> Iterator[Infrastructure]:
    """Start the embedded broker and Postgres unless configured or already running for this data dir."""
    infra = Infrastructure(settings)
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the service processes: this one's, with the data dir made absolute."""
    env = dict(os.environ)
    env["CDCWH_DATA_DIR"] = str(settings.data_dir.resolve())
    kafka_bootstrap(settings)  # fail fast here rather than in three children
    postgres_dsn(settings)
    return env


def run(args: argparse.Namespace, settings: Settings) -> int:
    with infrastructure(settings) as infra:
        env = child_env(settings)
        if args.until_caught_up:
            run_until_caught_up(env)
            console.print("caught up: everything in the topics is in PostgreSQL")
            return 0
        supervisor = Supervisor(settings.data_dir / "logs", env)
        serve_metrics(settings, "supervisor")  # cdcwh_errors_total{service=<child>, kind="exited"}
        console.print("running ingest, transform and sink; Ctrl-C stops them all")
        return supervisor.run_until_signal(watch=infra.check)
