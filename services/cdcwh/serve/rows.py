"""Paginated access to an entity's rows: the columns of the dimensions the caller may read (which must cover
the primary key; measures grant aggregates only, never the rows behind them),
in primary-key order, a page at a time (keyset pagination: the cursor is the last key of a page). The same
row filters as the semantic query apply; identifiers from the model, values (cursor, claims) as parameters."""

from __future__ import annotations

import base64
import binascii
import json
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
from cdcwh.serve.model import Dimension, SemanticModel


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode()


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise QueryError("not a cursor of this API") from None
    if (
        not isinstance(key, list)
        or len(key) != width
        or not all(v is None or isinstance(v, str | int | float | bool) for v in key)
    ):
        raise QueryError("not a cursor of this API")
    return key


def compile_rows(
    model: SemanticModel,
    entity_name: str,
    principal: Principal,
    *,
    schema: str,
    first: int,
    after: str | None,
    max_rows: int,
) -> Compiled:
    entity = model.entities.get(entity_name)
    readable: list[Dimension] = []
    if entity is not None:
        readable = [
            d for n, d in entity.dimensions.items() if permitted(model, principal, f"{entity_name}.{n}")
        ]
    # raw columns only of the dimensions granted (a measure grants an aggregate, not the rows behind it);
    # the key pages and is in the cursor, so a dimension granted must cover each of its columns
    if entity is None or not set(entity.primary_key) <= {d.column for d in readable}:
        raise NotPermitted(f"unknown or not permitted entity {entity_name!r}")
    if not 1 <= first <= max_rows:
        raise QueryError(f"first must be between 1 and {max_rows} (serve.max_rows)")
    columns = list(dict.fromkeys([*entity.primary_key, *(d.column for d in readable)]))
    builder = Builder(model, schema, entity_name)
    where: list[sql.Composable] = []
    params: list[Any] = []
    for condition in entity.filters:
        where.append(builder.condition("t0", condition, params))
    apply_row_filters(model, principal, builder, where, params)
    keys = sql.SQL(", ").join(sql.Identifier("t0", c) for c in entity.primary_key)
    if after is not None:
        key = decode_cursor(after, len(entity.primary_key))
        where.append(sql.SQL("({}) > ({})").format(keys, sql.SQL(", ").join(sql.Placeholder() * len(key))))
        params.extend(key)
    parts: list[sql.Composable] = [
        sql.SQL("SELECT {} FROM {} AS t0").format(
            sql.SQL(", ").join(sql.Identifier("t0", c) for c in columns), sql.Identifier(schema, entity.mart)
        ),
        *builder.joins,
    ]
    if where:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(where)))
    parts.append(sql.SQL("ORDER BY {} LIMIT %s").format(keys))
    return Compiled(
        query=sql.SQL(" ").join(parts),
        params=(*builder.join_params, *params, first + 1),
        columns=tuple(columns),
        marts=builder.marts(),
        limit=first,
        limited=True,
    )
