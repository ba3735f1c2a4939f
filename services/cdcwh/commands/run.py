"""``cdcwh run``: the whole pipeline, starting the embedded broker and Postgres when none is configured, and
capture (the Debezium engine) when a source database is configured for the data dir.

What it says goes through logging (one format with its services', cdcwh.logs). Each service's own output is
kept in ``<data_dir>/logs/<service>.log``; with ``--until-caught-up`` it is also relayed line by line, so a
batch run shows its progress.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from cdcwh import logs, preflight
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
from cdcwh.source import EmbeddedSource, capture_available
from cdcwh.source import cluster as source_cluster
from cdcwh.supervisor import SERVICES, WITH_CAPTURE, Supervisor, run_until_caught_up


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run ingest, transform and sink under one supervisor",
        description="Start the three services as separate processes, restart any that crashes, stop all on "
        "Ctrl-C. Starts the embedded broker and Postgres when CDCWH_KAFKA__BOOTSTRAP_SERVERS / "
        "CDCWH_POSTGRES__DSN are unset and none is running for the data dir.",
    )
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="process everything currently in the topics through to PostgreSQL, then exit 0",
    )
    parser.set_defaults(handler=run)


log = logging.getLogger(__name__)


class Infrastructure:
    """The embedded broker and Postgres of a ``cdcwh run`` or ``cdcwh demo``, and with ``source=True`` the
    embedded source PostgreSQL that capture reads: each started unless configured or already running for the
    data dir, and watched while the services run (``check``)."""

    def __init__(self, settings: Settings, *, source: bool = False) -> None:
        self.settings = settings
        self.with_source = source
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.source: EmbeddedSource | None = None
        self._reported: set[str] = set()

    def start(self) -> None:
        settings = self.settings
        if settings.kafka.bootstrap_servers is None:
            record = read_record(settings.run_dir, embedded_broker.NAME)
            if record is None or not record.alive:
                self.broker = EmbeddedBroker(settings.run_dir, settings.data_dir / "logs")
                self.broker.start()
                log.info("embedded broker on %s", self.broker.address)
        if settings.postgres.dsn is None:
            record = read_record(settings.run_dir, embedded_postgres.NAME)
            if record is None or not record.alive:
                self.postgres = EmbeddedPostgres(settings.data_dir, settings.run_dir)
                self.postgres.start()
                log.info("embedded PostgreSQL: psql '%s'", self.postgres.dsn)
        if self.with_source and settings.source.dsn is None:
            record = read_record(settings.run_dir, source_cluster.NAME)
            if record is None or not record.alive:
                self.source = EmbeddedSource(
                    settings.data_dir, settings.run_dir, settings.sql_path / "source" / "shop.sql"
                )
                self.source.start()
                log.info("embedded source PostgreSQL: psql '%s'", self.source.dsn)

    def check(self) -> None:
        """``watch``, but a failed restart (the port taken meanwhile) is reported and tried again next time
        rather than stopping the run and its services."""
        try:
            self.watch()
        except CdcwhError as exc:
            log.warning("could not restart an embedded service: %s; trying again shortly", exc)

    def watch(self) -> None:
        """Restart an embedded service this run started if it died (the broker on its old address, empty:
        ingest lands its new log as a new incarnation); for one that another command started, say once
        that it is down."""
        settings = self.settings
        broker = self.broker
        if broker is not None and (broker.process is None or broker.process.poll() is not None):
            if broker.process is not None:  # died now (not a restart that failed before)
                address = broker.address
                log.warning(
                    "the embedded broker exited (code %s); restarting it on %s: its topics are gone, "
                    "run `cdcwh replay sink` once it is caught up",
                    broker.process.returncode,
                    address,
                )
                broker.stop()
                broker = self.broker = EmbeddedBroker(
                    settings.run_dir, settings.data_dir / "logs", port=int(address.rsplit(":", 1)[1])
                )
            broker.start()
        elif self.broker is None and settings.kafka.bootstrap_servers is None:
            self._report_dead(embedded_broker.NAME, "cdcwh broker")
        if self.postgres is not None and self.postgres.record is not None and not self.postgres.record.alive:
            log.warning("the embedded PostgreSQL exited; restarting it (its data is kept)")
            self.postgres.stop()
            self.postgres.start()
        elif self.postgres is None and settings.postgres.dsn is None:
            self._report_dead(embedded_postgres.NAME, "cdcwh postgres")
        if self.source is not None and not self.source.alive():
            log.warning("the embedded source PostgreSQL exited; restarting it (its data and slot are kept)")
            self.source.stop()
            self.source.start()
        elif self.source is None and self.with_source and settings.source.dsn is None:
            self._report_dead(source_cluster.NAME, "cdcwh source")

    def _report_dead(self, name: str, command: str) -> None:
        record = read_record(self.settings.run_dir, name)
        if record is not None and record.alive:
            self._reported.discard(name)
        elif name not in self._reported:
            log.warning("the embedded %s of this data dir is not running: start it with `%s`", name, command)
            self._reported.add(name)

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.broker is not None:
            self.broker.stop()


@contextlib.contextmanager
def infrastructure(settings: Settings, *, source: bool = False) -> Iterator[Infrastructure]:
    """Start the embedded broker and Postgres (and with ``source``, the embedded source) unless configured or
    already running for this data dir."""
    infra = Infrastructure(settings, source=source)
    try:
        infra.start()
        yield infra
    finally:
        infra.stop()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the service processes: this one's, with the data dir made absolute and the log
    format this process chose (their output is a pipe or a file, where ``auto`` would always be json)."""
    env = dict(os.environ)
    env["CDCWH_DATA_DIR"] = str(settings.data_dir.resolve())
    env[logs.FORMAT_ENV] = logs.current_format()
    kafka_bootstrap(settings)  # fail fast here rather than in three children
    postgres_dsn(settings)
    return env


def source_configured(settings: Settings) -> bool:
    """A source database to capture: ``CDCWH_SOURCE__DSN``, or an embedded source recorded for the data dir
    (running, or its cluster in ``<data_dir>/source`` from an earlier ``cdcwh source`` or demo)."""
    if settings.source.dsn is not None:
        return True
    if read_record(settings.run_dir, source_cluster.NAME) is not None:
        return True
    return (settings.data_dir / "source" / "pgdata" / "PG_VERSION").exists()


def _relay(line: str) -> None:
    """A service's output line, as it came (it is already in this command's log format)."""
    sys.stderr.write(line)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # `--until-caught-up` drains what is in the topics; capture (a stream without an end) is not part of it
    capture = not args.until_caught_up and source_configured(settings)
    if capture:
        available, reason = capture_available()
        if not available:
            log.warning(
                "a source database is configured but capture cannot run here: %s; running without capture",
                reason,
            )
            capture = False
    with infrastructure(settings, source=capture) as infra:
        env = child_env(settings)
        preflight.check(settings, ("kafka", "postgres"))
        if args.until_caught_up:
            run_until_caught_up(env, relay=_relay)
            log.info("caught up: everything in the topics is in PostgreSQL")
            return 0
        supervisor = Supervisor(settings.data_dir / "logs", env, WITH_CAPTURE if capture else SERVICES)
        serve_metrics(settings, "supervisor")  # cdcwh_errors_total{service=<child>, kind="exited"}
        names = "capture, ingest, transform and sink" if capture else "ingest, transform and sink"
        log.info("running %s (logs in %s); Ctrl-C stops them all", names, supervisor.log_dir)
        return supervisor.run_until_signal(watch=infra.check)
