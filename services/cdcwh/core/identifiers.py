"""SQL identifiers, quoted for DuckDB (pure)."""

from __future__ import annotations


def quote(identifier: str) -> str:
    """A DuckDB identifier, quoted (identifiers come from topics and payloads: never interpolate them raw)."""
    return '"' + identifier.replace('"', '""') + '"'
