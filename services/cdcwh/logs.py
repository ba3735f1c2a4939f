"""One log format for cdcwh and the libraries it runs: ``json`` for machines, ``text`` for people.

Every record, whether from cdcwh, quixstreams, librdkafka (through the ``librdkafka`` logger that
``cdcwh.kafka`` gives each client), pyiceberg or a Python warning, goes through one handler on stderr:

- ``json``: one JSON object per line (``time``, ``service``, ``level``, ``logger``, ``message``, then any
  ``extra`` fields and ``exception``), which ``docker logs`` and log shippers take as one event each;
- ``text``: one plain line per record (``time level service logger: message key=value``), never wrapped or
  padded to the terminal width.

``auto`` (the default of ``log_format``) is ``text`` on a terminal and ``json`` otherwise. Rich stays for
interactive progress displays only; the handler looks ``sys.stderr`` up at each record, so a live display that
redirects stderr keeps its place below the log lines.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
FORMAT_ENV = "CDCWH_LOG_FORMAT"
LIBRDKAFKA_LOGGER = "librdkafka"
"""The logger librdkafka's own log lines go to (``logger`` in every client's settings, see cdcwh.kafka)."""

# Libraries that say little worth an operator's time at INFO: WARNING and above unless cdcwh is debugged.
QUIET_LIBRARIES = (
    "pgserver",
    "pyiceberg",
    "urllib3",
    "httpx",
    "httpcore",
    "sqlalchemy",
    "quixstreams.sinks",  # "CONNECTED!" when a sink starts
)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field of its own.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_current: LogFormat = "text"


def resolve_format(value: str | None) -> LogFormat:
    """``text``/``json`` as given (any case); ``auto``, empty or unknown: text on a terminal, else json."""
    chosen = (value or "auto").strip().lower()
    if chosen in ("text", "json"):
        return "json" if chosen == "json" else "text"
    return "text" if sys.stderr.isatty() else "json"


def _time(record: logging.LogRecord) -> str:
    return (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line; values JSON cannot hold are written as ``str()``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": _time(record),
            "service": self.service,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extra(record).items():
            event.setdefault(key, value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``2026-12-03T19:06:34.123Z INFO ingest cdcwh.ingest.service: message key=value`` (a traceback, when
    there is one, follows on its own lines)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {k}={v}" for k, v in _extra(record).items())
        line = (
            f"{_time(record)} {record.levelname} {self.service} {record.name}: {record.getMessage()}{fields}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (a rich live display swaps it), with
    the secrets of the settings masked."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record with every registered secret masked (``cdcwh.redaction.scrub``)."""
        from cdcwh.redaction import scrub

        return scrub(super().format(record))


def _to_console(handler: logging.Handler) -> bool:
    """A handler writing to the process's stderr or stdout (a test runner's capturing handlers are kept)."""
    if isinstance(handler, StderrHandler):
        return True
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and stream in (sys.stderr, sys.stdout, sys.__stderr__)


def configure(service: str, level: str = "INFO", log_format: str | None = None) -> LogFormat:
    """Route every logger to one stderr handler in the chosen format; returns the format in effect.

    Safe to call again (``cli.main`` calls it once before the settings are read, so that a configuration
    error is logged in the right format, and again with them).
    """
    chosen = resolve_format(log_format)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter(service))
    root = logging.getLogger()
    for old in root.handlers[:]:
        if _to_console(old):  # ours from an earlier call, or a library's basicConfig: one format only
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    debug = level == "DEBUG"
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    # quixstreams installs its own handler and format unless its logger already has one: a NullHandler
    # keeps it from doing so, and its records propagate to ours
    quix = logging.getLogger("quixstreams")
    if not any(isinstance(h, logging.NullHandler) for h in quix.handlers):
        quix.addHandler(logging.NullHandler())
    quix.propagate = True
    quix.setLevel(level)
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.captureWarnings(True)  # any warning that is not silenced becomes a record in this format
    global _current
    _current = chosen
    return chosen


def current_format() -> LogFormat:
    """The format ``configure`` chose last (``cdcwh run`` hands it to its children)."""
    return _current


def silence_known_warnings() -> None:
    """Ignore authlib's deprecation of its httpx client, which quixstreams imports: the warning names no
    problem of cdcwh and would open every service log.

    ``authlib.deprecate`` puts an ``always`` filter for its warning class first in the filter list when it is
    imported, ahead of any filter installed before; so it is imported here first and this filter, added after
    it, comes first and wins. Only that message of that class is ignored.
    """
    if importlib.util.find_spec("authlib") is None:
        return
    category: type[Warning] = importlib.import_module("authlib.deprecate").AuthlibDeprecationWarning
    warnings.filterwarnings("ignore", message=r"The httpx module is deprecated", category=category)
