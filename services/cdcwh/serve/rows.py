"""Paginated access to an entity's rows (the typed mart fields, ``cdcwh.serve.marts``): the columns the
caller may read, in primary-key order, a page at a time (keyset pagination: the cursor is the last key of a
page). The same row filters as the semantic query apply; identifiers from the model, values (cursor, claims)
as parameters.

Which columns a caller may read (``readable``): rows at all only when the dimensions it may read cover the
primary key; then the columns of those dimensions, and the columns of the measures it may read whose value
per row is what the semantic query would give grouped by the key (``sum``, ``average``, ``min``, ``max``
without filters, and a key that grouping does not truncate: no timestamp read as a time dimension). A
measure never opens more than its aggregate already shows.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg import sql

from cdcwh.serve.compile import (
    Builder,
    Compiled,
    NotPermitted,
    Principal,
    QueryError,
    apply_row_filters,
    permitted,
)
from cdcwh.serve.model import Entity, SemanticModel

ROW_AGGREGATES = frozenset({"sum", "average", "min", "max"})
DAY_TYPES = frozenset({"date"})


def row_columns(entity: Entity, *, unique: bool = True) -> list[str]:
    """The entity's columns open to row access (to some role), key first; ``unique``: its mart holds one
    row per key (``paging``), else no measure's column."""
    measures = [
        m.column for m in entity.measures.values() if m.agg in ROW_AGGREGATES and not m.filters and unique
    ]
    dimensions = [d.column for d in entity.dimensions.values()]
    return list(dict.fromkeys([*entity.primary_key, *dimensions, *measures]))


def readable(
    model: SemanticModel, principal: Principal, entity_name: str, types: Mapping[str, str], *, unique: bool
) -> frozenset[str] | None:
    """The columns of ``entity_name`` the caller may read row by row; None: no rows at all.
    ``types``: column -> its PostgreSQL data type; ``unique``: the mart holds one row per key at most (a
    primary key or unique index on the key columns, ``paging``), else no measure column opens."""
    entity = model.entities.get(entity_name)
    if entity is None:
        return None
    granted = [d for n, d in entity.dimensions.items() if permitted(model, principal, f"{entity_name}.{n}")]
    columns = {d.column for d in granted}
    if not set(entity.primary_key) <= columns:
        return None
    exact = all(
        types.get(c) in DAY_TYPES or any(d.column == c and d.type != "time" for d in granted)
        for c in entity.primary_key
    )
    if exact and unique:
        columns |= {
            m.column
            for n, m in entity.measures.items()
            if m.agg in ROW_AGGREGATES and not m.filters and permitted(model, principal, f"{entity_name}.{n}")
        }
    return frozenset(columns)


def _integer(value: Any) -> int:
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise ValueError(value)
    return value


def _number(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(value)
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(value)
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:  # PostgreSQL's text holds no NUL
        raise ValueError(value)
    return value


def _timestamp(aware: bool) -> Callable[[Any], dt.datetime]:
    def parse(value: Any) -> dt.datetime:
        stamp = dt.datetime.fromisoformat(_text(value))
        if (stamp.tzinfo is not None) != aware:
            raise ValueError(value)
        return stamp

    return parse


KEY_VALUES: Mapping[str, Callable[[Any], Any]] = {
    "smallint": _integer,
    "integer": _integer,
    "bigint": _integer,
    "numeric": _number,
    "real": _float,
    "double precision": _float,
    "boolean": _boolean,
    "date": lambda v: dt.date.fromisoformat(_text(v)),
    "timestamp without time zone": _timestamp(aware=False),
    "timestamp with time zone": _timestamp(aware=True),
    "time without time zone": lambda v: dt.time.fromisoformat(_text(v)),
    "text": _text,
    "character varying": _text,
    "character": _text,
    "uuid": lambda v: uuid.UUID(_text(v)),
}
"""A key column's data type -> the parser of its value in a cursor (ValueError: not one); an entity whose key
has another type is not paged (``after`` refused)."""


def paging(
    entity: Entity, unique_indexes: Sequence[Sequence[str]], types: Mapping[str, str]
) -> tuple[tuple[str, ...] | None, bool]:
    """How an entity's rows are paged, from its mart's unique indexes on NOT NULL columns (``unique_indexes``,
    the primary key among them; partial ones not) and column types: (the columns pages are ordered and cut
    by, None: no paging; whether the key is unique). A key covering a unique index orders alone; else a
    unique index's other columns follow it as tie-breakers (dim_customers: customer_id, then version); with
    no unique index, or a cut column of a type no cursor is made for (``KEY_VALUES``), no paging."""
    key = tuple(entity.primary_key)
    unique = any(set(index) <= set(key) for index in unique_indexes)
    if unique:
        order: tuple[str, ...] | None = key
    else:
        rests = sorted((tuple(c for c in index if c not in key) for index in unique_indexes), key=len)
        order = (*key, *rests[0]) if rests else None
    if order is not None and any(types.get(c) not in KEY_VALUES for c in order):
        order = None
    return order, unique


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode()


def decode_cursor(cursor: str, types: Sequence[str]) -> list[Any]:
    """The key values in ``cursor``, one per key column of ``types`` (their data types), parsed to that
    type: anything else (another shape, a NULL, a value of another type) is ``not a cursor of this API``,
    refused before any SQL."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(key, list) or len(key) != len(types):
            raise ValueError(key)
        return [KEY_VALUES[t](v) for t, v in zip(types, key, strict=True)]
    except (ValueError, TypeError, KeyError, InvalidOperation, binascii.Error):
        raise QueryError("not a cursor of this API") from None


def compile_rows(
    model: SemanticModel,
    entity_name: str,
    principal: Principal,
    *,
    schema: str,
    columns: Sequence[str],
    first: int,
    after: str | None,
    max_rows: int,
    types: Mapping[str, str],
    order: Sequence[str] | None,
    text: Collection[str] = (),
) -> Compiled:
    """A page of ``columns`` (checked by the caller with ``readable``) after the cursor ``after``, in the
    order of ``order`` (from ``paging``; None: the entity is not paged, ``after`` is refused); the ``order``
    columns come first in each row (the next cursor), then ``columns``. ``types``: column -> its PostgreSQL
    data type (the cursor's values are checked against the ``order`` columns'); ``text``: columns read as
    their PostgreSQL text (``::text``; not the ``order`` ones, which the cursor holds as values)."""
    entity = model.entities.get(entity_name)
    if entity is None:
        raise NotPermitted(f"unknown or not permitted entity {entity_name!r}")
    if not 1 <= first <= max_rows:
        raise QueryError(f"first must be between 1 and {max_rows} (serve.max_rows)")
    cut = list(order) if order is not None else list(entity.primary_key)
    selected = list(dict.fromkeys([*cut, *columns]))
    builder = Builder(model, schema, entity_name)
    where: list[sql.Composable] = []
    params: list[Any] = []
    for condition in entity.filters:
        where.append(builder.condition("t0", condition, params))
    apply_row_filters(model, principal, builder, where, params)
    keys = sql.SQL(", ").join(sql.Identifier("t0", c) for c in cut)
    if after is not None:
        if order is None:
            raise QueryError(
                f"{entity_name} rows are not paged (no primary key or unique index of mart {entity.mart} "
                "cuts its key): only the first page is given"
            )
        key = decode_cursor(after, [types.get(c, "") for c in order])
        where.append(sql.SQL("({}) > ({})").format(keys, sql.SQL(", ").join(sql.Placeholder() * len(key))))
        params.extend(key)
    parts: list[sql.Composable] = [
        sql.SQL("SELECT {} FROM {} AS t0").format(
            sql.SQL(", ").join(
                sql.SQL("{}::text" if c in text and c not in cut else "{}").format(sql.Identifier("t0", c))
                for c in selected
            ),
            sql.Identifier(schema, entity.mart),
        ),
        *builder.joins,
    ]
    if where:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(where)))
    parts.append(sql.SQL("ORDER BY {} LIMIT %s").format(keys))
    return Compiled(
        query=sql.SQL(" ").join(parts),
        params=(*builder.join_params, *params, first + 1),
        columns=tuple(selected),
        marts=builder.marts(),
        limit=first,
        limited=True,
        raw=True,
    )
