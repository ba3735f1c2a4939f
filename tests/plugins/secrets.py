"""Pytest plugin: canary secrets for the whole test session, and a check at its end that none leaked.

The session's PostgreSQL DSN (``postgres_dsn``, tests/plugins/infra.py) carries the password ``PG_PASSWORD``
(on the embedded Postgres it is the role's real password; on an external server without one it is added to
the DSN and, under trust authentication, ignored), so every test that runs the sink, ``replay``, ``status``
or the demo against it handles a DSN with a password. Tests may use the other canaries here for their own
settings (``tests/integration/test_secrets.py`` does: SASL, registry, source DSN).

At the end of the session (on the xdist controller, after every worker has finished) the plugin looks for
every canary in:

- every file under the session's base temporary directory (the services' logs of ``cdcwh run``, the
  embedded broker's and Postgres's logs, captured outputs written by tests, data files), up to
  ``MAX_FILE_BYTES`` each;
- pytest's record of every test: captured stdout, stderr and log records, and the failure text (what was
  raised; not pytest's rendering of the test's own arguments, which hold the canary DSN by design).

A canary found fails the session (exit status 1) with the places it was found in the terminal summary.
Turn the check off for one run with ``-p no:tests.plugins.secrets`` (the DSN then has no canary either).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

PG_PASSWORD = "cdcwh-canary-pg-5f3a91"  # noqa: S105 - test canaries, found nowhere else
SASL_PASSWORD = "cdcwh-canary-sasl-c27e04"  # noqa: S105
REGISTRY_PASSWORD = "cdcwh-canary-registry-9d4b1f"  # noqa: S105
SOURCE_PASSWORD = "cdcwh-canary-source-0e8c77"  # noqa: S105
JWT_SECRET = "cdcwh-canary-jwt-61aa3d-5e0b27c94f1d83a6"  # noqa: S105 - at least 32 bytes (serve.jwt_secret)
CANARIES = (PG_PASSWORD, SASL_PASSWORD, REGISTRY_PASSWORD, SOURCE_PASSWORD, JWT_SECRET)
MAX_FILE_BYTES = 256 * 1024 * 1024
_FOUND_KEY = pytest.StashKey[list[str]]()
_reported: list[str] = []
"""Where a canary was found in a test's report (filled on the controller, which receives every report)."""


def with_canary_password(dsn: str) -> str:
    """``dsn`` with ``password=PG_PASSWORD``, unless it already has a password (a real one is kept)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if conninfo_to_dict(dsn).get("password"):
        return dsn
    return make_conninfo(dsn, password=PG_PASSWORD)


def _raised_text(longrepr: str) -> str:
    """The lines of a failure that come from what was raised (``E   ...``), without pytest's rendering of
    the test's own values: the arguments of a failing test (``postgres_dsn = '...password=...'``) and the
    ``+  where x = f(...)`` explanations of an assertion, which quote the test's fixtures."""
    return "\n".join(
        line
        for line in longrepr.splitlines()
        if line.startswith("E") and not line[1:].lstrip().startswith("+")
    )


def _canaries_in(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    texts = [(f"captured {name}", content) for name, content in report.sections]
    if report.longrepr is not None:
        texts.append(("failure text", _raised_text(report.longreprtext)))
    _reported.extend(
        f"{report.nodeid} ({report.when}) {where}" for where, text in texts if _canaries_in(text)
    )


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Each test starts with no secrets registered for scrubbing (``cli.main`` in-process registers some)."""
    from cdcwh.redaction import forget_secrets

    forget_secrets()


def _scan_files(root: Path) -> list[str]:
    found = []
    needles = [canary.encode() for canary in CANARIES]
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            try:
                if path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
                    continue
                data = path.read_bytes()
            except OSError:  # a socket, a file removed meanwhile
                continue
            if any(needle in data for needle in needles):
                found.append(str(path))
    return found


def _basetemp(config: pytest.Config) -> Path | None:
    """The session's base temporary directory, if anything was made in it (never creating or clearing it:
    ``getbasetemp`` clears a ``--basetemp`` directory the first time it is called)."""
    factory: Any = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    return Path(basetemp) if basetemp is not None else None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _is_controller(config):
        return
    found = list(_reported)
    basetemp = _basetemp(config)
    if basetemp is not None and basetemp.is_dir():
        found.extend(f"file {path}" for path in _scan_files(basetemp))
    config.stash[_FOUND_KEY] = found
    if found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    found = config.stash.get(_FOUND_KEY, [])
    if not found:
        return
    terminalreporter.section("test secrets leaked", sep="=", red=True, bold=True)
    for place in found:
        terminalreporter.line(f"a canary secret (tests/plugins/secrets.py) was found in: {place}")
