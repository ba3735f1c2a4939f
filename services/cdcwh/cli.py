"""The ``cdcwh`` command line: one entry point, one subcommand per service or operator task.

Exit codes: 0 success, 1 an unexpected failure, 2 a cdcwh error with a one-line explanation (a bad setting,
a service that is not running), 130 interrupted. Some commands give 1 and 2 a meaning of their own, listed in
their help: ``reconcile`` (1: source and silver differ), ``status`` (1: lagging or stale, 2: unreachable).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from cdcwh import __version__
from cdcwh.config import Settings, load_settings
from cdcwh.errors import CdcwhError

err_console = Console(stderr=True)

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
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdcwh",
        description="Streaming CDC data warehouse: Debezium topics -> Iceberg bronze -> DuckDB silver/gold "
        "-> PostgreSQL marts. Settings come from CDCWH_* variables and cdcwh.toml (docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"cdcwh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in PARSER_MODULES:
        module = importlib.import_module(f"cdcwh.commands.{name}")
        register = getattr(module, "add_parser", None) or module.add_parsers
        register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
    )
    # third-party chatter stays at WARNING unless cdcwh itself is debugged
    for noisy in ("pgserver", "quixstreams", "pyiceberg", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def silence_known_warnings() -> None:
    """quixstreams imports authlib's httpx client, which warns AuthlibDeprecationWarning on import; filter
    exactly that category (by name, from authlib's modules) and nothing else."""
    warnings.filterwarnings("ignore", message=r"The httpx module is deprecated", category=DeprecationWarning)


def main(argv: Sequence[str] | None = None) -> int:
    silence_known_warnings()
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        handler: Handler = args.handler  # set by the command module's parser
        return handler(args, settings)
    except CdcwhError as exc:
        # the message as Text: it may hold brackets ("pip install 'cdcwh[debezium]'") that are not markup
        err_console.print(
            Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
