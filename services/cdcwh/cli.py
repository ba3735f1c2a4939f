"""The ``cdcwh`` command line: one entry point, one subcommand per service or operator task.

Exit codes: 0 success, 1 an unexpected failure, 2 a cdcwh error with a one-line explanation (a bad setting,
a service that is not running), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cdcwh import __version__, logs
from cdcwh.config import CONFIG_ENV, Settings, load_settings
from cdcwh.errors import CdcwhError
from cdcwh.logs import silence_known_warnings

log = logging.getLogger("cdcwh")

Handler = Callable[[argparse.Namespace, Settings], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _add_catch_up(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--until-caught-up`` and its ``--idle-seconds``, shared by the consuming services."""
    parser.add_argument("--until-caught-up", action="store_true", help=help_text)
    parser.add_argument(
        "--idle-seconds",
        type=_positive_float,
        default=1.0,
        help="with --until-caught-up: seconds each partition must stay at its end before exiting (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdcwh",
        description="Streaming CDC data warehouse: Debezium topics -> Iceberg bronze -> DuckDB silver/gold "
        "-> PostgreSQL marts. Settings come from CDCWH_* variables and cdcwh.toml (docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"cdcwh {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"the TOML config file (sets {CONFIG_ENV}; default ./cdcwh.toml when there is one)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help=f"{logs.FORMAT_ENV}: json (one object per line; the default when stderr is not a terminal) "
        "or text",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser(
        "generate",
        help="produce a Debezium-format shop workload to Kafka (or a JSON-lines file)",
        description="Simulate the Debezium PostgreSQL connector for the shop tables: a snapshot, then "
        "creates, updates and deletes (each followed by a tombstone). Same seed, same events.",
    )
    gen.add_argument(
        "--events", type=_positive_int, default=10_000, help="change events to emit (default 10000)"
    )
    gen.add_argument(
        "--rate", type=_positive_float, default=None, help="events per second (default: no limit)"
    )
    gen.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    gen.add_argument("--partitions", type=_positive_int, default=3, help="partitions per topic (default 3)")
    gen.add_argument("--schemaless", action="store_true", help="emit JSON without the schema envelope")
    gen.add_argument(
        "--topic-prefix", default="shop", help="Debezium topic prefix: topics are <prefix>.public.<table>"
    )
    gen.add_argument(
        "--output", metavar="FILE", help="write JSON lines to FILE instead of producing to Kafka"
    )
    gen.add_argument(
        "--expected-state", metavar="FILE", help="also write the final state of every table as JSON to FILE"
    )
    gen.add_argument(
        "--into-source",
        action="store_true",
        help="run the workload as SQL transactions against the source PostgreSQL instead (its capture "
        "produces the change events; docs/generator.md)",
    )
    gen.add_argument(
        "--source-dsn",
        help="with --into-source: the source database (default: CDCWH_SOURCE__DSN, else the embedded source)",
    )
    gen.add_argument(
        "--simulated-time",
        action="store_true",
        help="keep the simulated source commit times (default when producing: stamp the wall clock, so "
        "freshness can be measured)",
    )

    broker = sub.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker in the foreground",
        description="Start the embedded broker (Tansu, memory-only) on 127.0.0.1 and record its address in "
        "the data dir, so other cdcwh commands with the same CDCWH_DATA_DIR use it. Ctrl-C stops it.",
    )
    broker.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")

    sub.add_parser(
        "postgres",
        help="run the embedded PostgreSQL in the foreground",
        description="Start the embedded PostgreSQL (data in <data_dir>/postgres, Unix socket only) "
        "and record its URI in the data dir, so other cdcwh commands with the same CDCWH_DATA_DIR use it. "
        "Ctrl-C stops it.",
    )

    demo = sub.add_parser(
        "demo",
        help="start the embedded services, generate a shop workload and run the pipeline on it",
        description="The local default end to end on embedded services: a real source PostgreSQL captured "
        "by the Debezium engine where Java 17+ is there (--source), else the Debezium simulator.",
    )
    demo.add_argument("--events", type=_positive_int, default=20_000, help="change events (default 20000)")
    demo.add_argument(
        "--rate", type=_positive_float, default=None, help="events per second (default: no limit)"
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the pipeline and its metrics up until Ctrl-C"
    )
    demo.add_argument(
        "--source",
        choices=("auto", "postgres", "simulator"),
        default="auto",
        help="postgres: run the workload as SQL in a real source PostgreSQL captured by the Debezium engine "
        "(Java 17+ and the debezium extra), then reconcile the source with silver; simulator: produce "
        "simulated Debezium events; auto (default): postgres where capture can run, else the simulator",
    )

    ingest = sub.add_parser(
        "ingest",
        help="consume the Debezium topics and land every change in the Iceberg bronze tables",
        description="Consume the topics matching CDCWH_KAFKA__TOPICS, decode and validate each change event, "
        "append it to its bronze table exactly once, and quarantine bad records (bronze._quarantine and "
        "<topic>.dlq). Runs until SIGTERM/Ctrl-C, which flushes and commits before exiting.",
    )
    _add_catch_up(
        ingest, "land everything currently in the topics, then exit 0 (batch mode for backfills and tests)"
    )

    transform = sub.add_parser(
        "transform",
        help="build silver (current state) and gold (marts) in DuckDB from bronze, in micro-batches",
        description="Every CDCWH_TRANSFORM__INTERVAL_S seconds: apply the new bronze rows to silver, "
        "recompute the gold models of sql/gold, publish their changes to cdcwh.gold.<mart>. SIGTERM/Ctrl-C "
        "stops after the current batch.",
    )
    transform.add_argument(
        "--once", action="store_true", help="process everything new in bronze, then exit 0"
    )

    query = sub.add_parser(
        "query",
        help="run read-only SQL against silver and gold",
        description="Run one read-only SQL statement against the DuckDB warehouse (schemas silver, "
        "silver_history, gold, cdcwh) and print the result.",
    )
    query.add_argument("sql", help='e.g. "SELECT * FROM gold.daily_revenue ORDER BY order_date"')
    query.add_argument("--limit", type=_positive_int, default=100, help="rows to print (default 100)")

    sink = sub.add_parser(
        "sink",
        help="apply the gold change topics to the PostgreSQL marts",
        description="Consume cdcwh.gold.<mart> and upsert/delete the rows of the marts schema in PostgreSQL, "
        "guarded by version, one transaction per batch; Kafka offsets are committed after Postgres commits.",
    )
    _add_catch_up(sink, "apply everything currently in the gold topics, then exit")

    run = sub.add_parser(
        "run",
        help="run ingest, transform and sink under one supervisor",
        description="Start the three services as separate processes, restart any that crashes, stop all on "
        "Ctrl-C. Starts the embedded broker and Postgres when CDCWH_KAFKA__BOOTSTRAP_SERVERS / "
        "CDCWH_POSTGRES__DSN are unset and none is running for the data dir.",
    )
    run.add_argument(
        "--until-caught-up",
        action="store_true",
        help="process everything currently in the topics through to PostgreSQL, then exit 0",
    )

    from cdcwh.commands.replay import add_parser as add_replay_parser

    add_replay_parser(sub)

    from cdcwh.commands.maintain import add_parser as add_maintain_parser

    add_maintain_parser(sub)

    from cdcwh.commands.reconcile import add_parser as add_reconcile_parser

    add_reconcile_parser(sub)

    from cdcwh.commands.capture import add_parser as add_capture_parser
    from cdcwh.commands.source import add_parser as add_source_parser

    add_source_parser(sub)
    add_capture_parser(sub)

    sub.add_parser(
        "status",
        help="show lag per topic-partition, last batches, freshness and quarantine counts",
        description="Read-only overview of every layer: end offsets vs. ingest, bronze and silver; the last "
        "transform batches; newest rows in silver and PostgreSQL; quarantine counts by topic and reason.",
    )

    return parser


HANDLERS = {
    "generate": "cdcwh.commands.generate:run",
    "broker": "cdcwh.commands.infra:run_broker",
    "postgres": "cdcwh.commands.infra:run_postgres",
    "demo": "cdcwh.commands.demo:run",
    "ingest": "cdcwh.commands.ingest:run",
    "transform": "cdcwh.commands.transform:run",
    "query": "cdcwh.commands.transform:query",
    "sink": "cdcwh.commands.sink:run",
    "run": "cdcwh.commands.run:run",
    "replay": "cdcwh.commands.replay:run",
    "reconcile": "cdcwh.commands.reconcile:run",
    "maintain": "cdcwh.commands.maintain:run",
    "status": "cdcwh.commands.status:run",
    "source": "cdcwh.commands.source:run",
    "capture": "cdcwh.commands.capture:run",
}


def load_handler(command: str) -> Handler | None:
    """Import only the chosen command's module, so ``cdcwh broker`` does not load quixstreams or pyiceberg."""
    target = HANDLERS.get(command)
    if target is None:
        return None
    module, _, function = target.partition(":")
    handler: Handler = getattr(importlib.import_module(module), function)
    return handler


def apply_global_options(args: argparse.Namespace) -> None:
    """``--config`` and ``--log-format`` as the variables they stand for, so that the processes this command
    starts (``cdcwh run``'s services) read the same file and log in the same format."""
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    if args.log_format:
        os.environ[logs.FORMAT_ENV] = args.log_format


def report(exc: CdcwhError) -> None:
    """The one-line (or one-record) explanation of a cdcwh error, printed verbatim."""
    if logs.current_format() == "json":
        log.error("%s", exc)
    else:
        print(f"error: {exc}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    silence_known_warnings()
    args = build_parser().parse_args(argv)
    apply_global_options(args)
    # before the settings are read, so that an error reading them comes out in the chosen format
    logs.configure(args.command, "INFO", os.environ.get(logs.FORMAT_ENV))
    try:
        settings = load_settings()
        logs.configure(args.command, settings.log_level, settings.log_format)
        from cdcwh import preflight

        preflight.check(settings, preflight.NEEDS.get(args.command, ()))
        handler = load_handler(args.command)
        if handler is None:  # a subcommand without a handler is a bug
            raise RuntimeError(f"no handler for {args.command}")
        return handler(args, settings)
    except CdcwhError as exc:
        report(exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected failure of cdcwh %s", args.command)
        return 1


if __name__ == "__main__":
    sys.exit(main())
