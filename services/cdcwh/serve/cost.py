"""The query cost limit: before a query or subscription runs, its cost is estimated from the document and
its variables, and one costing more than ``serve.max_cost`` is refused with nothing run.

The cost bounds the work of rendering an answer, in typed field values: a typed mart field costs ``first``
times the node fields it selects (at least one), each value a GraphQL field resolved and serialized (about
12 us each, docs/benchmarks.md); a semantic query its ``limit`` (else ``serve.max_rows``) times its measures
and dimensions (at least one), divided by ``SEMANTIC_VALUES_PER_COST`` and rounded up (its rows are one JSON
value, each value converted and dumped at about 1 us); every other field 1 (with its sub-fields). Aliases
count each time; fields ``@skip``/``@include`` leave out count nothing (the walk is
``cdcwh.serve.selection``'s). A subscription costs what its semantic query costs, for each answer it pushes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from cdcwh.serve.selection import Operation, operation, refuse

SEMANTIC = "semantic"
SEMANTIC_VALUES_PER_COST = 10
"""A semantic query's values per cost unit: its answer costs about a tenth of the typed fields' per value."""


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def cost(found: Operation, marts: frozenset[str], max_rows: int) -> int:
    """The estimated cost of ``found``'s answer; ``marts``: the typed mart fields' names."""
    total = 0
    for field in found.roots():
        name = field.name.value
        arguments = found.arguments(field) if name in marts | {SEMANTIC} else None
        if arguments is None:
            total += found.size(field)
            continue
        if name == SEMANTIC:
            query = arguments.get("query")
            rows = _get(query, "limit") or max_rows
            values = len(_get(query, "measures") or ()) + len(_get(query, "dimensions") or ())
            total += -(-max(rows, 1) * max(values, 1) // SEMANTIC_VALUES_PER_COST)  # ceil
        else:
            rows = int(arguments.get("first") or 0)
            values = sum(len(found.leaves(nodes)) for nodes in found.named(field, "nodes"))
            total += max(rows, 1) * max(values, 1)
    return total


class QueryCostLimiter(SchemaExtension):
    def __init__(self, *, max_cost: int, max_rows: int, marts: frozenset[str]) -> None:
        """``marts``: the names of the typed mart fields on ``Query``."""
        self.max_cost = max_cost
        self.max_rows = max_rows
        self.marts = marts

    def cost(self) -> int:
        found = operation(self.execution_context)
        return 0 if found is None else cost(found, self.marts, self.max_rows)

    def on_execute(self) -> Iterator[None]:
        try:
            estimate = self.cost()
        except GraphQLError:  # arguments that do not coerce: execution reports them
            estimate = 0
        if estimate > self.max_cost:
            refuse(
                self.execution_context,
                f"the query costs {estimate}, more than {self.max_cost} (serve.max_cost): "
                "ask for fewer rows (first, limit) or fewer fields",
            )
        yield
