"""The two log formats, the choice between them, and the one warning cdcwh silences."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cdcwh.logs import JsonFormatter, TextFormatter, resolve_format, silence_known_warnings


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("cdcwh.ingest.service", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_is_one_object_per_record_with_the_fields_and_extras() -> None:
    line = JsonFormatter("ingest").format(record("landed %d of %s", 3, "a\nb", topic="shop.public.orders"))
    assert "\n" not in line
    event = json.loads(line)
    assert {k: event[k] for k in ("service", "level", "logger", "message", "topic")} == {
        "service": "ingest",
        "level": "WARNING",
        "logger": "cdcwh.ingest.service",
        "message": "landed 3 of a\nb",
        "topic": "shop.public.orders",
    }
    assert event["time"].endswith("Z") and event["time"][:4].isdigit()


def test_json_holds_an_exception_and_values_json_cannot_hold() -> None:
    try:
        raise ValueError("broken [b]x[/b]")
    except ValueError:
        failed = record("failed", path=Path("/data/logs"))
        failed.exc_info = sys.exc_info()
    event = json.loads(JsonFormatter("sink").format(failed))
    assert "ValueError: broken [b]x[/b]" in event["exception"]
    assert event["path"] == "/data/logs"


def test_text_is_one_plain_line_however_long() -> None:
    message = "x" * 300
    line = TextFormatter("transform").format(record("%s", message, batch=7))
    assert "\n" not in line
    assert line.endswith(f" WARNING transform cdcwh.ingest.service: {message} batch=7")


def test_an_explicit_format_wins_and_auto_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_format("JSON") == "json"
    assert resolve_format("text") == "text"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert resolve_format("auto") == "json"
    assert resolve_format(None) == "json"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert resolve_format("auto") == "text"


def test_only_authlibs_httpx_deprecation_is_silenced() -> None:
    deprecate = importlib.import_module("authlib.deprecate")
    with warnings.catch_warnings(record=True) as seen:
        silence_known_warnings()
        deprecate.deprecate("The httpx module is deprecated; please use httpx2 instead.")
        deprecate.deprecate("something else is deprecated")
        warnings.warn("an unrelated deprecation", DeprecationWarning, stacklevel=1)
    messages = [str(w.message) for w in seen]
    assert messages == ["something else is deprecated", "an unrelated deprecation"]


def test_importing_quixstreams_after_silencing_prints_no_warning() -> None:
    """The order of a real start: cdcwh silences first, the service's import of quixstreams comes later."""
    code = "from cdcwh.logs import silence_known_warnings; silence_known_warnings(); import quixstreams"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stderr == ""
