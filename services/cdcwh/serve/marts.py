"""Typed paginated access to each entity's mart: at start, from the semantic model and the mart columns
PostgreSQL reports (``information_schema``), one GraphQL object type per entity (one typed field per column
open to row access, ``rows.row_columns``) and one connection field per entity on ``Query``, built with
strawberry's ``create_type``.

A request's selection decides the columns read: the caller's roles must allow each one selected
(``rows.readable``), else the request is refused before any SQL runs; the row filters of its token apply
inside the compiled SQL. Pages are in primary-key order (keyset: ``after`` is the ``endCursor`` of the page
before), ``first`` rows each, at most ``serve.max_rows``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NewType

import strawberry
from graphql import FieldNode, GraphQLError, OperationType
from graphql.execution.values import VariableValues
from strawberry.extensions import SchemaExtension
from strawberry.scalars import JSON
from strawberry.tools import create_type
from strawberry.types import Info
from strawberry.types.field import StrawberryField
from strawberry.utils.str_converters import to_camel_case

from cdcwh.errors import ConfigError
from cdcwh.serve.compile import NotPermitted, Principal, QueryError
from cdcwh.serve.model import SemanticModel
from cdcwh.serve.rows import compile_rows, encode_cursor, paging, readable, row_columns
from cdcwh.serve.schema import Context
from cdcwh.serve.selection import Operation, operation, refuse

BigInt = NewType("BigInt", int)
BIGINT_SCALAR = strawberry.scalar(
    name="BigInt",
    description="A 64-bit integer, as a JSON number (beyond 2^53 JavaScript's numbers lose precision).",
    serialize=int,
    parse_value=int,
)
DEFAULT_FIRST = 100
SCALARS = frozenset(
    {"BigInt", "Boolean", "Date", "DateTime", "Decimal", "Float", "ID", "Int", "JSON", "String", "Time"}
)
"""The scalars' names: an entity's type may not take one (strawberry, building its own error for such a clash,
fails with a TypeError); clashes with other types strawberry reports, or ``app.build_schema`` finds."""
# information_schema data_type -> the Python type strawberry maps to a GraphQL type; anything else: String
TYPES: Mapping[str, Any] = {
    "smallint": int,
    "integer": int,
    "bigint": BigInt,
    "numeric": Decimal,
    "real": float,
    "double precision": float,
    "boolean": bool,
    "date": dt.date,
    "timestamp without time zone": dt.datetime,
    "timestamp with time zone": dt.datetime,
    "time without time zone": dt.time,
    "json": JSON,
    "jsonb": JSON,
}


@strawberry.type(description="Where a page ends; pass endCursor as the next page's after.")
class PageInfo:
    end_cursor: str | None
    has_next_page: bool


@dataclass(frozen=True)
class MartField:
    """One entity's typed access: its GraphQL names and the column behind each field."""

    entity: str
    field_name: str
    node: type
    columns: Mapping[str, str]
    """GraphQL field name -> column."""
    page: type
    attributes: Mapping[str, str]
    """column -> the Python attribute of ``node``."""
    converters: Mapping[str, Any]
    """column -> a function making the value fit its field (for a type shown as String: str(), for a cut
    column, whose value the cursor holds; the others are read as text, ``text``)."""
    types: Mapping[str, str]
    order: tuple[str, ...] | None
    """The columns pages are ordered and cut by (``rows.paging``); None: not paged."""
    text: frozenset[str]
    """The columns of types outside ``TYPES``, shown as String: read as PostgreSQL's text of them."""
    unique: bool
    """The mart holds one row per key (a primary key or unique index on it): measure columns may open."""


def type_taken(entity: str, type_name: str) -> ConfigError:
    return ConfigError(
        f"semantic model: entity {entity} would name a GraphQL type {type_name}, which another type has: "
        "rename the entity"
    )


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def requested_columns(mart: MartField, found: Operation, fields: Iterable[FieldNode]) -> list[str]:
    """The columns of the nodes ``fields`` (of ``mart``'s field) select, in the node type's order."""
    names = {
        name for field in fields for nodes in found.named(field, "nodes") for name in found.leaves(nodes)
    }
    return [column for name, column in mart.columns.items() if name in names]


def check_access(
    model: SemanticModel, principal: Principal | None, mart: MartField, columns: list[str]
) -> Principal:
    """The caller, if it may read ``columns`` of ``mart``'s rows; else NotPermitted."""
    if principal is None:  # the endpoint authenticates first; never reached without one
        raise NotPermitted("not authenticated")
    allowed = readable(model, principal, mart.entity, mart.types, unique=mart.unique)
    if allowed is None:
        raise NotPermitted(f"unknown or not permitted entity {mart.entity!r}")
    refused = [n for n, column in mart.columns.items() if column in columns and column not in allowed]
    if refused:
        raise NotPermitted(f"not permitted: {', '.join(f'{mart.node.__name__}.{n}' for n in refused)}")
    return principal


class MartAccess(SchemaExtension):
    """Refuses a query selecting a typed mart field, or a node field of one, the caller may not read, before
    anything runs (so no sibling field's SQL runs either)."""

    def __init__(self, *, marts: Mapping[str, MartField]) -> None:
        """``marts``: the typed mart fields by their name on ``Query``."""
        self.marts = marts

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        if self.execution_context.result is None and isinstance(context, Context):
            try:
                found = operation(self.execution_context)
                for field in found.roots() if found is not None and found.kind is OperationType.QUERY else ():
                    mart = self.marts.get(field.name.value)
                    if mart is not None:
                        columns = requested_columns(mart, found, [field])  # type: ignore[arg-type]
                        check_access(context.services.model, context.principal, mart, columns)
            except NotPermitted as exc:
                context.access.status = "denied"
                refuse(self.execution_context, str(exc))
            except GraphQLError:  # variables or directives that do not coerce: execution reports them
                pass
        yield


def _resolver(mart: MartField) -> Any:
    async def resolve(info: Info[Context, None], first: int = DEFAULT_FIRST, after: str | None = None) -> Any:
        context = info.context
        services = context.services
        try:
            raw = info._raw_info
            variables = raw.variable_values
            if not isinstance(variables, VariableValues):  # graphql-core hands resolvers the plain values
                variables = VariableValues(sources={}, coerced=dict(variables))
            found = Operation(
                OperationType.QUERY, None, raw.operation.selection_set, raw.fragments, variables
            )
            columns = requested_columns(mart, found, raw.field_nodes)
            principal = check_access(services.model, context.principal, mart, columns)  # MartAccess did too
            compiled = compile_rows(
                services.model,
                mart.entity,
                principal,
                schema=services.warehouse.schema,
                columns=columns,
                first=first,
                after=after,
                max_rows=services.max_rows,
                types=mart.types,
                order=mart.order,
                text=mart.text,
            )
        except NotPermitted:
            context.access.status = "denied"
            raise
        except QueryError:
            context.access.status = "error"
            raise
        answer = await services.warehouse.run(compiled)
        context.access.marts |= answer.marts
        context.access.rows += len(answer.rows)
        width = len(mart.order or ())
        nodes = []
        for row in answer.rows:
            values = {
                mart.attributes[column]: None if value is None else mart.converters[column](value)
                for column, value in zip(answer.columns, row, strict=True)
                if column in mart.attributes and column in columns
            }
            nodes.append(mart.node(**values))
        last = list(answer.rows[-1][:width]) if answer.rows and width else None
        page_info = PageInfo(
            end_cursor=encode_cursor(last) if last is not None else None, has_next_page=answer.has_more
        )
        return mart.page(nodes=nodes, page_info=page_info)

    resolve.__name__ = f"mart_{mart.entity}"
    return resolve


def _plain(name: str, attribute: str, graphql_type: Any, description: str | None = None) -> StrawberryField:
    """A field without a resolver: the GraphQL ``name`` of the Python ``attribute`` (default None)."""
    field: StrawberryField = strawberry.field(
        name=name, graphql_type=graphql_type, default=None, description=description
    )
    field.python_name = attribute
    return field


def mart_fields(
    model: SemanticModel,
    column_types: Mapping[str, Mapping[str, str]],
    reserved: set[str],
    unique_indexes: Mapping[str, Sequence[Sequence[str]]],
) -> tuple[list[StrawberryField], list[MartField]]:
    """A connection field per entity (named after it, camelCase), its node type with a field per column
    open to row access, typed from ``column_types`` (mart -> column -> data type), paged by the key and
    ``unique_indexes`` (mart -> its unique indexes' columns, ``rows.paging``)."""
    fields: list[StrawberryField] = []
    marts: list[MartField] = []
    for entity_name, entity in sorted(model.entities.items()):
        type_name = pascal(entity_name)
        if type_name in SCALARS:
            raise type_taken(entity_name, type_name)
        field_name = to_camel_case(entity_name)
        if field_name in reserved:
            raise ConfigError(f"semantic model: entity {entity_name} clashes with the API field {field_name}")
        types = column_types.get(entity.mart, {})
        order, unique = paging(entity, unique_indexes.get(entity.mart, ()), types)
        node_fields: list[StrawberryField] = []
        columns: dict[str, str] = {}
        attributes: dict[str, str] = {}
        converters: dict[str, Any] = {}
        for index, column in enumerate(row_columns(entity, unique=unique)):
            data_type = types.get(column, "text")
            python = TYPES.get(data_type, str)
            graphql_name = to_camel_case(column)
            attribute = f"c{index}"
            node_fields.append(
                _plain(graphql_name, attribute, python | None, f"{entity.mart}.{column} ({data_type})")
            )
            columns[graphql_name] = column
            attributes[column] = attribute
            converters[column] = str if python is str else (lambda v: v)
        description = entity.description or f"A row of {entity.mart}."
        node = create_type(type_name, node_fields, description=description)
        page = create_type(
            f"{type_name}Page",
            [
                _plain("nodes", "nodes", list[node]),  # type: ignore[valid-type]
                _plain("pageInfo", "page_info", PageInfo),
            ],
            description=f"A page of {entity_name} rows in primary-key order.",
        )
        mart = MartField(
            entity=entity_name,
            field_name=field_name,
            node=node,
            page=page,
            columns=columns,
            attributes=attributes,
            converters=converters,
            types=dict(types),
            order=order,
            unique=unique,
            text=frozenset(c for c in columns.values() if TYPES.get(types.get(c, "text")) is None),
        )
        field = strawberry.field(
            resolver=_resolver(mart),
            name=field_name,
            graphql_type=page,
            description=f"Rows of {entity.mart} ({entity_name}), a page at a time in primary-key order; "
            "fields the caller's roles may not read are refused.",
        )
        fields.append(field)
        marts.append(mart)
    return fields, marts
