"""Semantic query -> SQL, with the access policy applied: pure, no connection.

Identifiers (schema, marts, columns) come from the model only and are quoted by ``psycopg.sql``; every value
(client filters, the model's own conditions, claims, the limit) is a parameter. The caller's roles decide
which members it may name, and their row filters become ``WHERE`` conditions on the joined dimension; a
member unknown and a member not permitted give the same error, so refusals reveal nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from cdcwh.serve.model import (
    GRANULARITIES,
    MEMBER,
    Condition,
    Dimension,
    Measure,
    SemanticModel,
)
from cdcwh.serve.query import (
    Compiled,
    DimensionRef,
    Filter,
    NotPermitted,
    Op,
    Order,
    Principal,
    QueryError,
    SemanticQuery,
)

__all__ = [  # the value types are re-exported: callers import them from here
    "AGGREGATES",
    "Builder",
    "COMPARISONS",
    "Compiled",
    "DimensionRef",
    "Filter",
    "MAX_FILTER_VALUES",
    "NotPermitted",
    "Op",
    "Order",
    "Principal",
    "QueryError",
    "SemanticQuery",
    "apply_row_filters",
    "compile_query",
    "permitted",
]
COMPARISONS: Mapping[str, str] = {
    "equals": "=",
    "not_equals": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
}
MAX_FILTER_VALUES = 500
AGGREGATES: Mapping[str, str] = {"sum": "sum", "count": "count", "average": "avg", "min": "min", "max": "max"}


def permitted(model: SemanticModel, principal: Principal, ref: str) -> bool:
    entity = ref.split(".", 1)[0]
    for role_name in principal.roles:
        role = model.roles.get(role_name)
        if role is not None and (ref in role.members or f"{entity}.*" in role.members):
            return True
    return False


def _resolve(model: SemanticModel, principal: Principal, ref: str) -> tuple[str, str, Dimension | Measure]:
    if MEMBER.match(ref) is None or not permitted(model, principal, ref):
        raise NotPermitted(f"unknown or not permitted member {ref!r}")
    try:
        return model.member(ref)
    except KeyError:
        raise NotPermitted(f"unknown or not permitted member {ref!r}") from None


def _paths(model: SemanticModel, base: str) -> dict[str, tuple[str, dict[str, str]] | None]:
    """Entity -> (the entity it is joined from, the join's columns), over the shortest join paths."""
    found: dict[str, tuple[str, dict[str, str]] | None] = {base: None}
    queue = deque([base])
    while queue:
        current = queue.popleft()
        for join in model.entities[current].joins.values():
            if join.entity not in found:
                found[join.entity] = (current, join.keys)
                queue.append(join.entity)
    return found


class Builder:
    def __init__(self, model: SemanticModel, schema: str, base: str) -> None:
        self.model = model
        self.schema = schema
        self.base = base
        self.paths = _paths(model, base)
        self.aliases: dict[str, str] = {base: "t0"}
        self.joins: list[sql.Composable] = []
        self.join_params: list[Any] = []

    def alias(self, entity: str) -> str:
        """The alias of ``entity``, joining it (and the entities on its path) on first use."""
        if entity in self.aliases:
            return self.aliases[entity]
        path = self.paths.get(entity)
        if path is None:
            raise NotPermitted(f"{entity} cannot be combined with {self.base}")
        parent, on = path
        parent_alias = self.alias(parent)
        alias = self.aliases[entity] = f"t{len(self.aliases)}"
        conditions: list[sql.Composable] = [
            sql.SQL("{} = {}").format(sql.Identifier(alias, theirs), sql.Identifier(parent_alias, ours))
            for ours, theirs in on.items()
        ]
        for condition in self.model.entities[entity].filters:
            conditions.append(self.condition(alias, condition, self.join_params))
        self.joins.append(
            sql.SQL("LEFT JOIN {} AS {} ON {}").format(
                sql.Identifier(self.schema, self.model.entities[entity].mart),
                sql.Identifier(alias),
                sql.SQL(" AND ").join(conditions),
            )
        )
        return alias

    @staticmethod
    def condition(alias: str, condition: Condition, params: list[Any]) -> sql.Composable:
        params.extend(condition.in_)
        return sql.SQL("{} IN ({})").format(
            sql.Identifier(alias, condition.column),
            sql.SQL(", ").join(sql.Placeholder() * len(condition.in_)),
        )

    def marts(self) -> frozenset[str]:
        return frozenset(self.model.entities[entity].mart for entity in self.aliases)


def apply_row_filters(
    model: SemanticModel,
    principal: Principal,
    builder: Builder,
    where: list[sql.Composable],
    params: list[Any],
) -> None:
    for role_name in principal.roles:
        role = model.roles.get(role_name)
        for row_filter in role.row_filters if role is not None else ():
            claim = principal.claims.get(row_filter.claim)
            if claim is None and not row_filter.required:
                continue
            if builder.base in row_filter.exempt:
                continue
            if claim is None:
                raise NotPermitted("not permitted for this token")
            entity, _, dimension = model.member(row_filter.dimension)
            try:
                alias = builder.alias(entity)
            except NotPermitted:
                raise NotPermitted("not permitted for this token") from None
            where.append(sql.SQL("{} = %s").format(sql.Identifier(alias, dimension.column)))
            params.append(str(claim))


def compile_query(
    model: SemanticModel, query: SemanticQuery, principal: Principal, *, schema: str, max_rows: int
) -> Compiled:
    """The SQL answering ``query`` for ``principal`` over the marts in ``schema``."""
    if not query.measures and not query.dimensions:
        raise QueryError("name at least one measure or dimension")
    if query.limit is not None and not 1 <= query.limit <= max_rows:
        raise QueryError(f"limit must be between 1 and {max_rows} (serve.max_rows)")
    measures = [_resolve(model, principal, ref) for ref in query.measures]
    dimensions = [(_resolve(model, principal, d.member), d.granularity) for d in query.dimensions]
    bases = {entity for entity, _, _ in measures} or {dimensions[0][0][0]}
    if len(bases) > 1:
        raise QueryError("all measures of a query must belong to one entity")
    builder = Builder(model, schema, bases.pop())
    select: list[sql.Composable] = []
    select_params: list[Any] = []
    columns: list[str] = []
    for (entity, name, definition), granularity in dimensions:
        if not isinstance(definition, Dimension):
            raise QueryError(f"{entity}.{name} is a measure, not a dimension")
        column = sql.Identifier(builder.alias(entity), definition.column)
        if definition.type == "time":
            grain = granularity or "day"
            if grain not in GRANULARITIES:
                raise QueryError(f"{entity}.{name}: granularity is one of {', '.join(GRANULARITIES)}")
            select.append(sql.SQL("CAST(date_trunc({}, {}) AS date)").format(sql.Literal(grain), column))
        elif granularity is not None:
            raise QueryError(f"{entity}.{name} is not a time dimension: no granularity")
        else:
            select.append(column)
        columns.append(f"{entity}.{name}")
    for entity, name, definition in measures:
        if not isinstance(definition, Measure):
            raise QueryError(f"{entity}.{name} is a dimension, not a measure")
        column = sql.Identifier("t0", definition.column)
        if definition.agg == "count_distinct":
            expression = sql.SQL("count(DISTINCT {})").format(column)
        else:
            expression = sql.SQL("{}({})").format(sql.SQL(AGGREGATES[definition.agg]), column)
        if definition.filters:
            conditions = [builder.condition("t0", c, select_params) for c in definition.filters]
            expression = sql.SQL("{} FILTER (WHERE {})").format(expression, sql.SQL(" AND ").join(conditions))
        select.append(expression)
        columns.append(f"{entity}.{name}")
    where: list[sql.Composable] = []
    where_params: list[Any] = []
    for condition in model.entities[builder.base].filters:
        where.append(builder.condition("t0", condition, where_params))
    for client_filter in query.filters:
        where.append(_filter(model, principal, builder, client_filter, where_params))
    apply_row_filters(model, principal, builder, where, where_params)
    order = _order(query.order, columns, len(dimensions))
    parts: list[sql.Composable] = [
        sql.SQL("SELECT {} FROM {} AS t0").format(
            sql.SQL(", ").join(select), sql.Identifier(schema, model.entities[builder.base].mart)
        ),
        *builder.joins,
    ]
    if where:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(where)))
    if dimensions and measures:
        parts.append(
            sql.SQL("GROUP BY {}").format(
                sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(dimensions)))
            )
        )
    elif dimensions:
        parts[0] = sql.SQL("SELECT DISTINCT {} FROM {} AS t0").format(
            sql.SQL(", ").join(select), sql.Identifier(schema, model.entities[builder.base].mart)
        )
    if order:
        parts.append(sql.SQL("ORDER BY {}").format(order))
    limit = query.limit or max_rows
    parts.append(sql.SQL("LIMIT %s"))
    return Compiled(
        query=sql.SQL(" ").join(parts),
        params=(*select_params, *builder.join_params, *where_params, limit + 1),
        columns=tuple(columns),
        marts=builder.marts(),
        limit=limit,
        limited=query.limit is not None,
    )


def _filter(
    model: SemanticModel, principal: Principal, builder: Builder, client_filter: Filter, params: list[Any]
) -> sql.Composable:
    entity, name, definition = _resolve(model, principal, client_filter.member)
    if not isinstance(definition, Dimension):
        raise QueryError(f"filter on {entity}.{name}: only dimensions can be filtered")
    column = sql.Identifier(builder.alias(entity), definition.column)
    values = client_filter.values
    if len(values) > MAX_FILTER_VALUES:
        raise QueryError(f"filter on {entity}.{name}: more than {MAX_FILTER_VALUES} values")
    if client_filter.op == "in":
        if not values:
            raise QueryError(f"filter on {entity}.{name}: 'in' needs at least one value")
        params.extend(values)
        return sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(sql.Placeholder() * len(values)))
    if len(values) != 1:
        raise QueryError(f"filter on {entity}.{name}: {client_filter.op!r} takes exactly one value")
    params.append(values[0])
    return sql.SQL("{} {} %s").format(column, sql.SQL(COMPARISONS[client_filter.op]))


def _order(order: Sequence[Order], columns: list[str], dimensions: int) -> sql.Composable | None:
    if not order:
        if not dimensions:
            return None
        return sql.SQL(", ").join(sql.Literal(i + 1) for i in range(dimensions))
    items = []
    for item in order:
        if item.member not in columns:
            raise QueryError(f"order by {item.member!r}: only a selected member")
        position = sql.Literal(columns.index(item.member) + 1)
        items.append(sql.SQL("{} DESC" if item.descending else "{}").format(position))
    return sql.SQL(", ").join(items)
