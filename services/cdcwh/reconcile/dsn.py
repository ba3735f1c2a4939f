"""Where the source PostgreSQL is: ``--source-dsn``, else ``CDCWH_SOURCE__DSN`` (``settings.source.dsn``),
else the embedded source recorded in ``<data_dir>/run/source.json`` by ``cdcwh source``."""

from __future__ import annotations

import os

from pydantic import SecretStr

from cdcwh.config import Settings
from cdcwh.embedded.registry import read_record
from cdcwh.errors import ConfigError

SOURCE_RECORD = "source"
ENV = "CDCWH_SOURCE__DSN"


def source_dsn(settings: Settings, explicit: str | None = None) -> str:
    """The source database's DSN; a ``ConfigError`` naming the three ways to give one when there is none."""
    if explicit:
        return explicit
    section = getattr(settings, "source", None)
    configured = getattr(section, "dsn", None) if section is not None else None
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    if isinstance(configured, str) and configured:
        return configured
    # a settings model without the section (older config.py) still honours the variable
    from_env = os.environ.get(ENV)
    if from_env:
        return from_env
    record = read_record(settings.run_dir, SOURCE_RECORD)
    if record is not None and record.address:
        return record.address
    raise ConfigError(
        f"no source database: pass --source-dsn, set {ENV}, or start the embedded source with `cdcwh source` "
        f"(it records its address in {settings.run_dir / 'source.json'})"
    )
