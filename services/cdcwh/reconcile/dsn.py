"""Where the source PostgreSQL is: an explicit ``--source-dsn``, else what ``cdcwh.source.source_dsn`` finds
(``CDCWH_SOURCE__DSN``, or the embedded source ``cdcwh source`` recorded in the data dir)."""

from __future__ import annotations

from cdcwh.config import Settings


def source_dsn(settings: Settings, explicit: str | None = None) -> str:
    """The source database's DSN; a one-line error naming how to give one when there is none."""
    if explicit:
        return explicit
    from cdcwh.source.service import source_dsn as configured

    return configured(settings)
