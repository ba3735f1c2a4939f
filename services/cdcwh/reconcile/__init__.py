"""``cdcwh reconcile``: is silver equal to the source database? Counts, range digests, then the rows.

``reconcile(settings)`` returns a ``ReconcileResult`` (``.equal``, ``.tables``: one ``TableReconciliation``
per captured table with ``summary()`` and its ``differences``); ``compare`` explains the method and
``canonical`` how values are compared by meaning.
"""

from cdcwh.reconcile.compare import (
    DEFAULT_RANGES,
    DEFAULT_SHOWN,
    Difference,
    ReconcileResult,
    TableReconciliation,
    connect_source,
    reconcile,
    reconcile_connections,
)
from cdcwh.reconcile.dsn import source_dsn

__all__ = [
    "DEFAULT_RANGES",
    "DEFAULT_SHOWN",
    "Difference",
    "ReconcileResult",
    "TableReconciliation",
    "connect_source",
    "reconcile",
    "reconcile_connections",
    "source_dsn",
]
