"""The mart tables as databases created before the sink derived them from the gold models have them."""

from __future__ import annotations

import re
from pathlib import Path

LEGACY_DDL = Path(__file__).with_name("legacy_marts.sql")


def legacy_mart_ddl(schema: str) -> str:
    """``legacy_marts.sql`` with its ``marts`` schema replaced by ``schema`` (quoted)."""
    quoted = '"' + schema.replace('"', '""') + '"'
    text = re.sub(r"\bSCHEMA IF NOT EXISTS marts\b", f"SCHEMA IF NOT EXISTS {quoted}", LEGACY_DDL.read_text())
    return re.sub(r"\bmarts\.", f"{quoted}.", text)
