"""One table metadata per transaction state, instead of one deep copy per read.

pyiceberg 0.12's ``Transaction.table_metadata`` replays the staged updates over the table's metadata and
returns a deep copy, snapshot log included, on every read; an append reads it about twenty times. The cost
grows with the table's history: it was about 40% of a commit in the bronze soak (docs/benchmarks.md, "Soak").
Upstream has the same fix proposed (apache/iceberg-python#3302, #3784): the result is kept while the two
inputs are the same objects. ``_updates`` is a tuple that staging rebinds (``+=``), and a commit replaces
``Table.metadata``, so either change is a miss with no invalidation to forget; the cache holds both inputs,
so their identities cannot be reused while it does. The only visible difference, as upstream notes: reads of
one state return one object, with one ``last_updated_ms`` (a commit stamps its own).

Installed by :func:`install` (``open_catalog`` calls it), for the pyiceberg versions this was
checked against only.
"""

from __future__ import annotations

from typing import Any, Final

import pyiceberg
from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import update_table_metadata

CHECKED: Final = ("0.12.",)
_ATTRIBUTE: Final = "_cdcwh_metadata"


def _table_metadata(self: Transaction) -> TableMetadata:
    base: Any = self._table.metadata
    updates = self._updates
    cached: tuple[Any, Any, TableMetadata] | None = getattr(self, _ATTRIBUTE, None)
    if cached is not None and cached[0] is base and cached[1] is updates:
        return cached[2]
    metadata = update_table_metadata(base, updates)
    setattr(self, _ATTRIBUTE, (base, updates, metadata))
    return metadata


def install() -> bool:
    """Cache ``Transaction.table_metadata``; False (and nothing changed) on a pyiceberg not checked here."""
    if not pyiceberg.__version__.startswith(CHECKED):
        return False
    if not isinstance(Transaction.__dict__.get("table_metadata"), property):
        return False
    Transaction.table_metadata = property(_table_metadata)  # type: ignore[assignment,method-assign]
    return True
