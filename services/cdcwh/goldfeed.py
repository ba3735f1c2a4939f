"""The gold change feed's format: topic names and the one codec of its messages.

The transform publishes every change of a gold mart to ``<prefix>.<mart>``
(``CDCWH_KAFKA__GOLD_TOPIC_PREFIX``) and the sink reads them back. Both sides use this module, so the format
is written down once:

- key: the mart's primary key as a JSON object (``{"order_id": 7}``), the bytes the outbox stored;
- value: ``{"mart", "op": "upsert"|"delete", "version", "source_ts_ms", "key": {...}, "row": {...}|null}``
  with decimals as strings.

``encode`` builds the value with orjson: the key and row are already JSON (DuckDB's ``to_json`` in the outbox)
and are spliced in as ``orjson.Fragment`` without being parsed again; everything else, the mart name
included, is escaped by orjson. ``decode`` reads it with the standard library's ``json``, which keeps integers
wider than 64 bits exact (orjson would turn them into floats).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from cdcwh.errors import MalformedGoldChange

__all__ = ["GoldChange", "MalformedGoldChange", "decode", "encode", "gold_topic"]

OPS = frozenset({"upsert", "delete"})


def gold_topic(prefix: str, mart: str) -> str:
    """The change topic of ``mart`` (``CDCWH_KAFKA__GOLD_TOPIC_PREFIX`` + ``.`` + mart)."""
    return f"{prefix}.{mart}"


@dataclass(frozen=True)
class GoldChange:
    """One message of a gold change topic; ``key`` is the JSON text of the mart's primary key."""

    mart: str
    op: str
    version: int
    key: str
    row: dict[str, Any] | None
    source_ts_ms: int | None


def encode(*, mart: str, op: str, version: int, source_ts_ms: int | None, key: str, row: str | None) -> bytes:
    """The message value of one change; ``key`` and ``row`` are JSON texts (``row`` is None for a delete)."""
    return orjson.dumps(
        {
            "mart": mart,
            "op": op,
            "version": version,
            "source_ts_ms": source_ts_ms,
            "key": orjson.Fragment(key),
            "row": None if row is None else orjson.Fragment(row),
        }
    )


def decode(key: bytes, value: bytes) -> GoldChange:
    """The change a message holds; ``MalformedGoldChange`` names what is missing or wrong."""
    try:
        data = json.loads(value)
        text = key.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedGoldChange(f"gold change is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedGoldChange(f"gold change is not a JSON object: {value[:200]!r}")
    try:
        change = GoldChange(
            mart=str(data["mart"]),
            op=str(data["op"]),
            version=int(data["version"]),
            key=text,
            row=data.get("row"),
            source_ts_ms=data.get("source_ts_ms"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedGoldChange(f"gold change lacks or has a bad {exc}: {value[:200]!r}") from exc
    if change.op not in OPS:
        raise MalformedGoldChange(
            f"gold change of {change.mart!r} has op {change.op!r}, not upsert or delete"
        )
    return change
