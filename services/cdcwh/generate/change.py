"""The shop tables and the ``SourceChange`` record the generator emits (one row change, before encoding).

Values are plain Python: ``int``, ``str``, ``bool``, ``Decimal`` (2 dp), ``date``, an aware UTC ``datetime``
for ``timestamptz`` and a *naive* ``datetime`` for ``timestamp without time zone`` (the only naive
datetimes in cdcwh: the column has no zone, and Debezium encodes it as wall-clock micros since the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["r", "c", "u", "d"]
ColumnKind = Literal["int32", "int64", "string", "boolean", "decimal", "timestamptz", "timestamp", "date"]

# Debezium's default ``unavailable.value.placeholder``: an unchanged TOASTed column on an UPDATE.
TOAST_PLACEHOLDER = "__debezium_unavailable_value"

# numeric(10,2) is the only numeric type in the shop schema.
DECIMAL_PRECISION = 10
DECIMAL_SCALE = 2


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind


@dataclass(frozen=True, slots=True)
class Table:
    """A source table; the primary key is ``id`` (first column) for every shop table."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def _table(name: str, *columns: tuple[str, ColumnKind]) -> Table:
    return Table(name, tuple(Column(column, kind) for column, kind in columns))


CUSTOMERS = _table(
    "customers",
    ("id", "int32"),
    ("email", "string"),
    ("first_name", "string"),
    ("last_name", "string"),
    ("segment", "string"),
    ("country", "string"),
    ("created_at", "timestamptz"),
)
PRODUCTS = _table(
    "products",
    ("id", "int32"),
    ("sku", "string"),
    ("name", "string"),
    ("category", "string"),
    ("price", "decimal"),
    ("active", "boolean"),
    ("description", "string"),
)
ORDERS = _table(
    "orders",
    ("id", "int64"),
    ("customer_id", "int32"),
    ("status", "string"),
    ("order_date", "date"),
    ("created_at", "timestamp"),
)
ORDER_ITEMS = _table(
    "order_items",
    ("id", "int64"),
    ("order_id", "int64"),
    ("product_id", "int32"),
    ("quantity", "int32"),
    ("unit_price", "decimal"),
)
PAYMENTS = _table(
    "payments",
    ("id", "int64"),
    ("order_id", "int64"),
    ("method", "string"),
    ("amount", "decimal"),
    ("created_at", "timestamptz"),
)

# Snapshot order (a Debezium snapshot reads one table after another).
SHOP_TABLES: dict[str, Table] = {t.name: t for t in (CUSTOMERS, PRODUCTS, ORDERS, ORDER_ITEMS, PAYMENTS)}

Row = dict[str, Any]
# table -> primary-key tuple -> full row
State = dict[str, dict[tuple[Any, ...], Row]]


@dataclass(frozen=True, slots=True)
class SourceChange:
    """One row change as the Debezium PostgreSQL connector sees it (REPLICA IDENTITY DEFAULT).

    ``before`` is None on r/c/u; on ``d`` it holds the key columns and None for every other column, and
    ``after`` is None. ``toasted`` names the columns of ``after`` that carry ``TOAST_PLACEHOLDER`` instead of
    their (unchanged) value. ``ts_ms`` is the simulated source commit time. ``snapshot`` is "true", "last"
    (the last snapshot row) or "false" (streaming). ``last_commit_lsn`` is the commit LSN of the previous
    transaction (the first element of Debezium's ``source.sequence``); None for snapshot rows.
    """

    table: str
    op: Op
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    toasted: frozenset[str]
    lsn: int
    tx_id: int
    ts_ms: int
    snapshot: str
    last_commit_lsn: int | None = None

    def key_tuple(self) -> tuple[Any, ...]:
        """The primary key as a tuple, in key-column order (the shape used by ``State``)."""
        return tuple(self.key.values())
