"""The operation a request runs, read from its document before execution, for the checks that refuse a
request before any SQL runs (the cost limit, ``cdcwh.serve.cost``; the typed mart fields' column access,
``cdcwh.serve.marts``): its root fields and each field's sub-fields through fragments, leaving out what
``@skip``/``@include`` leave out, and a root field's arguments from the variables."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_operation_ast,
)
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_directive_values,
    get_variable_values,
)
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType as StrawberryOperationType

from cdcwh.serve.audit import Access
from cdcwh.serve.schema import Context


@dataclass(frozen=True)
class Operation:
    kind: OperationType
    root: GraphQLObjectType | None
    """The operation's root type (``Query``, ``Subscription``)."""
    selection_set: SelectionSetNode
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: VariableValues

    def included(self, node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (skip is not None and skip.get("if")) and not (
            include is not None and not include.get("if")
        )

    def fields(self, selection_set: SelectionSetNode | None) -> Iterator[FieldNode]:
        """The fields of ``selection_set`` that run, through fragments (validation refused their cycles)."""
        for selection in selection_set.selections if selection_set is not None else ():
            if not isinstance(selection, FieldNode | InlineFragmentNode | FragmentSpreadNode):
                continue
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from self.fields(selection.selection_set)
            elif selection.name.value in self.fragments:
                yield from self.fields(self.fragments[selection.name.value].selection_set)

    def roots(self) -> Iterator[FieldNode]:
        return self.fields(self.selection_set)

    def named(self, field: FieldNode, name: str) -> Iterator[FieldNode]:
        """The sub-fields of ``field`` called ``name`` (each alias of it)."""
        return (f for f in self.fields(field.selection_set) if f.name.value == name)

    def leaves(self, field: FieldNode) -> list[str]:
        """The names of the sub-fields ``field`` selects (no ``__typename``), once per time asked for."""
        return [f.name.value for f in self.fields(field.selection_set) if not f.name.value.startswith("__")]

    def size(self, field: FieldNode) -> int:
        """``field`` and all it selects, each field counted once per time it is asked for."""
        return 1 + sum(self.size(f) for f in self.fields(field.selection_set))

    def arguments(self, field: FieldNode) -> dict[str, Any] | None:
        """A root field's arguments (None: not a field of the root type)."""
        definition = self.root.fields.get(field.name.value) if self.root is not None else None
        return None if definition is None else get_argument_values(definition, field, self.variables)


def operation(context: ExecutionContext) -> Operation | None:
    """The request's operation; None when there is none to check (no document, no such operation, variables
    that do not fit: execution reports those)."""
    document = context.graphql_document
    if document is None:
        return None
    found = get_operation_ast(document, context.operation_name)
    if found is None:
        return None
    schema = context.schema._schema
    coerced = get_variable_values(schema, found.variable_definitions or (), context.variables or {})
    if not isinstance(coerced, VariableValues):
        return None
    roots = {OperationType.QUERY: schema.query_type, OperationType.SUBSCRIPTION: schema.subscription_type}
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return Operation(found.operation, roots.get(found.operation), found.selection_set, fragments, coerced)


def refuse(context: ExecutionContext, message: str) -> None:
    """Answer the request with the error ``message`` and run nothing. A query's result is set in its place
    (its audit row is the endpoint's); a subscription, whose start strawberry runs regardless, gets its audit
    row here and the error raised (the caller's ``on_execute`` raises it before its ``yield``)."""
    if context.operation_type is StrawberryOperationType.SUBSCRIPTION:
        state = context.context
        if isinstance(state, Context):
            principal = state.principal
            access = Access(
                "subscription",
                subject=principal.subject if principal else None,
                roles=principal.roles if principal else (),
                operation_hash=hashlib.sha256((context.query or "").encode()).hexdigest(),
                status="error",
                error=message,
            )
            state.services.audit.record(access)
        raise GraphQLError(message)
    context.result = ExecutionResult(data=None, errors=[GraphQLError(message)])
