"""The ``cdcwh`` command line: one entry point, one subcommand per service or operator task.

Exit codes: 0 success, 1 an unexpected failure, 2 a cdcwh error with a one-line explanation (a bad setting,
a service that is not running), 130 interrupted. Some commands give 1 and 2 a meaning of their own, listed in
their help: ``reconcile`` (1: source and silver differ), ``status`` (1: lagging or stale, 2: unreachable).
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
from cdcwh.redaction import remember_secrets, scrub

log = logging.getLogger("cdcwh")

Handler = Callable[[argparse.Namespace, Settings], int]


# each module registers its own subcommands (``add_parser`` / ``add_parsers``) and their handler
# (``set_defaults(handler=...)``); importing them stays light: the heavy imports (quixstreams, pyiceberg,
# duckdb) are inside the handlers
PARSER_MODULES = (
    "generate",
    "infra",
    "demo",
    "ingest",
    "transform",
    "sink",
    "run",
    "replay",
    "maintain",
    "reconcile",
    "source",
    "capture",
    "status",
    "serve",
    "token",
    "profile",
    "test",
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
    for name in PARSER_MODULES:
        module = importlib.import_module(f"cdcwh.commands.{name}")
        register = getattr(module, "add_parser", None) or module.add_parsers
        register(sub)
    return parser


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
        print(f"error: {scrub(str(exc))}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    silence_known_warnings()
    args = build_parser().parse_args(argv)
    apply_global_options(args)
    # before the settings are read, so that an error reading them comes out in the chosen format
    logs.configure(args.command, "INFO", os.environ.get(logs.FORMAT_ENV))
    try:
        settings = load_settings()
        remember_secrets(settings)
        logs.configure(args.command, settings.log_level, settings.log_format)
        from cdcwh import preflight

        preflight.check(settings, preflight.NEEDS.get(args.command, ()))
        handler: Handler = args.handler  # set by the command module's parser
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
