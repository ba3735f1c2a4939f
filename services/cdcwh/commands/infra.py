"""``cdcwh broker`` and ``cdcwh postgres``: embedded services in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

from cdcwh.commands.output import make_console
from cdcwh.config import Settings
from cdcwh.embedded import EmbeddedBroker, EmbeddedPostgres
from cdcwh.pgroles import DEFAULT_PREFIX
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
    what = postgres.add_subparsers(dest="postgres_command", metavar="COMMAND")
    roles = what.add_parser(
        "init-roles",
        help="create the per-service roles (owner, sink, audit, reader) and their grants",
        description="Create (or bring up to date: re-running is safe) the roles <prefix>owner, "
        "<prefix>sink, <prefix>audit and <prefix>reader, the marts and audit schemas owned by "
        "<prefix>owner, the audit tables, and the grants (docs/security.md). Connects with postgres.dsn "
        "(CDCWH_POSTGRES__DSN; the embedded Postgres when unset), which must name a superuser (a "
        "CREATEROLE role cannot set the role attributes on PostgreSQL 16). deploy/postgres/roles.sql is "
        "the same SQL (--print-sql).",
    )
    roles.add_argument(
        "--role-prefix", default=DEFAULT_PREFIX, help=f"prefix of the role names (default {DEFAULT_PREFIX})"
    )
    roles.add_argument(
        "--password-env",
        action="append",
        default=[],
        metavar="PURPOSE=VARIABLE",
        help="set the password of a role from an environment variable, e.g. sink=CDCWH_SINK_PG_PASSWORD "
        "(repeatable; PURPOSE is owner, sink, audit or reader; the password is never printed)",
    )
    roles.add_argument(
        "--print-sql", action="store_true", help="print the SQL (without passwords) instead of running it"
    )
    roles.set_defaults(handler=run_init_roles)


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


def run_init_roles(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import sys

    import psycopg

    from cdcwh.embedded import postgres_dsn
    from cdcwh.errors import ConfigError
    from cdcwh.pgroles import PURPOSES, RoleNames, render_sql, role_statements

    roles = RoleNames.with_prefix(args.role_prefix)
    marts, audit = settings.postgres.schema_, settings.postgres.audit_schema
    if args.print_sql:
        sys.stdout.write(render_sql(roles, marts, audit))
        return 0
    passwords: dict[str, str] = {}
    for spec in args.password_env:
        purpose, _, variable = spec.partition("=")
        if purpose not in PURPOSES or not variable:
            raise ConfigError(
                f"--password-env {spec!r}: expected PURPOSE=VARIABLE, PURPOSE one of {', '.join(PURPOSES)}"
            )
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"--password-env {purpose}={variable}: {variable} is unset or empty")
        passwords[purpose] = value
    with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn, conn.transaction():
        row = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (row and row[1]):
            raise ConfigError(
                f"init-roles: the PostgreSQL role {row[0] if row else '?'} (postgres.dsn) is not a "
                "superuser; connect as one (a CREATEROLE role cannot set NOSUPERUSER/NOCREATEDB on "
                "PostgreSQL 16, nor SET ROLE to the owner)"
            )
        for statement in role_statements(roles, marts, audit, passwords):
            conn.execute(statement)
    names = ", ".join(roles.of(purpose) for purpose in PURPOSES)
    with_passwords = f"; passwords set for {', '.join(sorted(passwords))}" if passwords else ""
    console.print(f"roles {names} ready; schemas {marts} and {audit} owned by {roles.owner}{with_passwords}")
    return 0
