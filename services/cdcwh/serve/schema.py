"""The GraphQL schema's fixed part (strawberry): the semantic query and the members the caller may read
(``query_fields``; the typed mart fields are generated at start, ``cdcwh.serve.marts``), and the types the
subscription (``cdcwh.serve.live``) shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.types.field import StrawberryField

from cdcwh.serve.audit import Access, AuditWriter
from cdcwh.serve.compile import (
    Compiled,
    DimensionRef,
    Filter,
    NotPermitted,
    Order,
    Principal,
    QueryError,
    SemanticQuery,
    compile_query,
    permitted,
)
from cdcwh.serve.model import SemanticModel
from cdcwh.serve.ratelimit import Limiter
from cdcwh.serve.store import Answer, Warehouse

log = logging.getLogger(__name__)


@dataclass
class Services:
    model: SemanticModel
    warehouse: Warehouse
    audit: AuditWriter
    max_rows: int
    max_members: int
    limiter: Limiter
    max_subscriptions: int = 10


@dataclass
class Context:
    services: Services
    principal: Principal | None
    access: Access
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] = field(default_factory=dict)
    subscriptions: int = 0
    """Open on this connection (a WebSocket's context lives as long as the connection)."""


@strawberry.enum
class Granularity(Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


@strawberry.enum
class FilterOp(Enum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


@strawberry.input(description="A dimension to group by; a time dimension takes a granularity (default DAY).")
class DimensionInput:
    member: str
    granularity: Granularity | None = None


@strawberry.input(
    description="Keep the rows whose dimension compares so with the values (bound as parameters)."
)
class FilterInput:
    member: str
    op: FilterOp
    values: list[str]


@strawberry.input
class OrderInput:
    member: str
    descending: bool = False


@strawberry.input(description="Measures of one entity, by dimensions of it or of entities joined to it.")
class SemanticQueryInput:
    measures: list[str] = strawberry.field(default_factory=list)
    dimensions: list[DimensionInput] = strawberry.field(default_factory=list)
    filters: list[FilterInput] = strawberry.field(default_factory=list)
    order: list[OrderInput] = strawberry.field(default_factory=list)
    limit: int | None = None


@strawberry.type(description="Rows of values in the order of columns; decimals as exact strings, dates ISO.")
class SemanticResult:
    columns: list[str]
    rows: list[JSON]
    marts: list[str]
    has_more: bool
    cached: bool


@strawberry.type
class Member:
    name: str
    kind: str
    type: str
    description: str


def to_result(answer: Answer) -> SemanticResult:
    return SemanticResult(
        columns=list(answer.columns),
        rows=[cast(JSON, list(row)) for row in answer.rows],
        marts=sorted(answer.marts),
        has_more=answer.has_more,
        cached=answer.cached,
    )


def compile_input(context: Context, query: SemanticQueryInput, access: Access) -> Compiled:
    services = context.services
    if context.principal is None:  # the endpoint authenticates first; never reached without a token
        raise NotPermitted("not authenticated")
    members = len(query.measures) + len(query.dimensions) + len(query.filters)
    try:
        if members > services.max_members:
            raise QueryError(f"more than {services.max_members} members and filters (serve.max_members)")
        semantic = SemanticQuery(
            measures=tuple(query.measures),
            dimensions=tuple(
                DimensionRef(d.member, d.granularity.value if d.granularity else None)
                for d in query.dimensions
            ),
            filters=tuple(Filter(f.member, f.op.value, tuple(f.values)) for f in query.filters),
            order=tuple(Order(o.member, o.descending) for o in query.order),
            limit=query.limit,
        )
        return compile_query(
            services.model,
            semantic,
            context.principal,
            schema=services.warehouse.schema,
            max_rows=services.max_rows,
        )
    except NotPermitted:
        access.status = "denied"
        raise
    except QueryError:
        access.status = "error"
        raise


async def semantic(info: Info[Context, None], query: SemanticQueryInput) -> SemanticResult:
    context = info.context
    compiled = compile_input(context, query, context.access)
    try:
        answer = await context.services.warehouse.run(compiled)
    except QueryError:
        context.access.status = "error"
        raise
    context.access.marts |= answer.marts
    context.access.rows += len(answer.rows)
    return to_result(answer)


def members(info: Info[Context, None]) -> list[Member]:
    principal = info.context.principal
    model = info.context.services.model
    found = []
    for entity_name, entity in sorted(model.entities.items()):
        members: list[tuple[str, str, str, str]]
        members = [(n, "dimension", d.type, d.description) for n, d in sorted(entity.dimensions.items())]
        members += [(n, "measure", m.agg, m.description) for n, m in sorted(entity.measures.items())]
        for name, kind, type_, description in members:
            ref = f"{entity_name}.{name}"
            if principal is not None and permitted(model, principal, ref):
                found.append(Member(name=ref, kind=kind, type=type_, description=description))
    return found


def query_fields() -> list[StrawberryField]:
    """Fresh fields (a schema takes its fields over) for ``Query``: ``semantic`` and ``members``."""
    fields: list[StrawberryField] = [
        strawberry.field(
            resolver=semantic,  # type: ignore[list-item]
            description="Measures by dimensions, compiled from the semantic model for the caller.",
        ),
        strawberry.field(  # type: ignore[list-item]
            resolver=members, description="The members (entity.name) the caller's roles may read."
        ),
    ]
    return fields
