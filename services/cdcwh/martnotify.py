"""The announcement of new mart versions: the sink sends it with ``pg_notify`` inside the transaction that
applies a batch (PostgreSQL delivers it only when that transaction commits, so a listener never sees a
half-applied batch), and ``cdcwh serve`` listens to it to drop cached answers and push subscriptions.

Payload: ``{"marts": {"<mart>": <newest version applied>}}``. The channel is derived from the marts schema,
so two warehouses (or two tests) in one PostgreSQL do not hear each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

PREFIX = "cdcwh_marts_"
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1


def channel(schema: str) -> str:
    """``cdcwh_marts_<schema>`` (lower case), or with a hash of the schema when that would be too long."""
    name = PREFIX + schema.lower()
    if len(name.encode()) <= MAX_IDENTIFIER and name.isascii():
        return name
    return PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:32]


def encode(versions: Mapping[str, int]) -> str:
    return json.dumps({"marts": dict(versions)}, sort_keys=True)


def decode(payload: str) -> dict[str, int]:
    """The marts announced and their versions; ``ValueError`` for a payload that is not one."""
    data = json.loads(payload)
    marts = data.get("marts") if isinstance(data, dict) else None
    if not isinstance(marts, dict) or not all(isinstance(v, int) for v in marts.values()):
        raise ValueError(f"not a mart announcement: {payload[:200]!r}")
    return {str(k): int(v) for k, v in marts.items()}
