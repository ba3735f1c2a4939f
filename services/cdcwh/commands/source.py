"""``cdcwh source``: the embedded source PostgreSQL (wal_level=logical, shop schema) in the foreground."""

from __future__ import annotations

import argparse

from cdcwh.commands.output import make_console
from cdcwh.config import Settings
from cdcwh.errors import ConfigError

console = make_console()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    source = sub.add_parser(
        "source",
        help="run the embedded source PostgreSQL (logical decoding, shop schema) in the foreground",
        description="Start a PostgreSQL 16 cluster for Debezium to capture: data in <data_dir>/source, "
        "wal_level=logical, listening on 127.0.0.1 and a TCP port, the shop schema of sql/source/shop.sql "
        "loaded at the first start. Its DSN is recorded in the data dir, so `cdcwh capture` with the same "
        "CDCWH_DATA_DIR finds it. Ctrl-C stops it (its data and replication slot are kept).",
    )
    source.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    source.set_defaults(handler=run)


def describe(dsn: str) -> str:
    """host:port/dbname of a DSN, without its password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable DSN)"
    return f"{parts.get('host', '?')}:{parts.get('port', 5432)}/{parts.get('dbname', '?')}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.source.dsn is not None:
        raise ConfigError(
            f"CDCWH_SOURCE__DSN is set ({describe(settings.source.dsn.get_secret_value())}): capture reads "
            "that database, so there is no embedded source to start; unset it to use `cdcwh source`"
        )
    from cdcwh.commands.infra import wait_for_stop_signal
    from cdcwh.source import EmbeddedSource

    source = EmbeddedSource(
        settings.data_dir, settings.run_dir, settings.sql_path / "source" / "shop.sql", port=args.port
    )
    record = source.start()
    try:
        console.print(f"embedded source PostgreSQL running (pid {record.pid}), data in {source.pgdata}")
        console.print(f"connect: psql '{record.address}'")
        console.print(f"`cdcwh capture` with CDCWH_DATA_DIR={settings.data_dir} finds it on its own.")
        console.print("Ctrl-C stops it (its data and replication slot are kept).")
        if not wait_for_stop_signal(source.alive):
            console.print(f"the embedded source (pid {record.pid}) exited; see {source.log_path}")
            return 1
    finally:
        source.stop()
        console.print("embedded source stopped")
    return 0
