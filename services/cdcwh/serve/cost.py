"""The query cost limit: before a query runs, its cost is estimated from the document and its variables,
and a query costing more than ``serve.max_cost`` is refused with nothing run.

The cost bounds the values an answer can hold: a typed mart field costs ``first`` times the node fields it
selects (at least one), a semantic query its ``limit`` (else ``serve.max_rows``) times its measures and
dimensions (at least one), and every other field 1 (with its sub-fields). Aliases count each time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_operation_ast,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

SEMANTIC = "semantic"


def _fields(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[FieldNode]:
    """The fields of a selection set, through fragments (validation has refused fragment cycles)."""
    for selection in selection_set.selections if selection_set is not None else ():
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            yield from _fields(fragments[selection.name.value].selection_set, fragments)


def _size(field: FieldNode, fragments: Mapping[str, FragmentDefinitionNode]) -> int:
    return 1 + sum(_size(f, fragments) for f in _fields(field.selection_set, fragments))


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


class QueryCostLimiter(SchemaExtension):
    def __init__(self, *, max_cost: int, max_rows: int, marts: frozenset[str]) -> None:
        """``marts``: the names of the typed mart fields on ``Query``."""
        self.max_cost = max_cost
        self.max_rows = max_rows
        self.marts = marts

    def cost(self) -> int:
        context = self.execution_context
        document = context.graphql_document
        if document is None:
            return 0
        operation = get_operation_ast(document, context.operation_name)
        if operation is None or operation.operation != OperationType.QUERY:
            return 0
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        schema = context.schema._schema
        query_type: GraphQLObjectType | None = schema.query_type
        coerced = get_variable_values(schema, operation.variable_definitions or (), context.variables or {})
        if not isinstance(coerced, VariableValues):  # variables that do not fit: execution reports them
            return 0
        variables = coerced
        total = 0
        for field in _fields(operation.selection_set, fragments):
            name = field.name.value
            definition = query_type.fields.get(name) if query_type is not None else None
            if definition is None or name not in self.marts | {SEMANTIC}:
                total += _size(field, fragments)
                continue
            arguments = get_argument_values(definition, field, variables)
            if name == SEMANTIC:
                query = arguments.get("query")
                rows = _get(query, "limit") or self.max_rows
                values = len(_get(query, "measures") or ()) + len(_get(query, "dimensions") or ())
            else:
                rows = int(arguments.get("first") or 0)
                nodes = [f for f in _fields(field.selection_set, fragments) if f.name.value == "nodes"]
                values = sum(
                    1
                    for n in nodes
                    for f in _fields(n.selection_set, fragments)
                    if not f.name.value.startswith("__")
                )
            total += max(rows, 1) * max(values, 1)
        return total

    def on_execute(self) -> Iterator[None]:
        try:
            cost = self.cost()
        except GraphQLError:  # arguments that do not coerce: execution reports them
            cost = 0
        if cost > self.max_cost:
            message = (
                f"the query costs {cost}, more than {self.max_cost} (serve.max_cost): "
                "ask for fewer rows (first, limit) or fewer fields"
            )
            self.execution_context.result = ExecutionResult(data=None, errors=[GraphQLError(message)])
        yield
