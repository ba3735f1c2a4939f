"""The semantic API's value types: a query as the client asked it, the caller, the compiled SQL, and the
client's errors (pure, no connection)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from cdcwh.serve.model import Granularity

Op = Literal["equals", "not_equals", "in", "gt", "gte", "lt", "lte"]


class QueryError(ValueError):
    """The query cannot be answered as asked (a bad member, a limit too high): the client's error."""


class NotPermitted(QueryError):
    """The caller may not read what it asked for (or it does not exist: the two are not told apart)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: tuple[str, ...]
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DimensionRef:
    member: str
    granularity: Granularity | None = None


@dataclass(frozen=True)
class Filter:
    member: str
    op: Op
    values: tuple[str, ...]


@dataclass(frozen=True)
class Order:
    member: str
    descending: bool = False


@dataclass(frozen=True)
class SemanticQuery:
    measures: tuple[str, ...] = ()
    dimensions: tuple[DimensionRef, ...] = ()
    filters: tuple[Filter, ...] = ()
    order: tuple[Order, ...] = ()
    limit: int | None = None


@dataclass(frozen=True)
class Compiled:
    query: sql.Composed
    params: tuple[Any, ...]
    columns: tuple[str, ...]
    marts: frozenset[str]
    limit: int
    """Rows wanted; the SQL fetches one more, so the caller can tell that there were more."""
    limited: bool
    """The client set the limit (more rows: cut); else more than ``max_rows`` rows is an error."""
    raw: bool = False
    """Rows as PostgreSQL gave them (typed GraphQL fields); else JSON values (``store.plain``)."""

    def key(self) -> str:
        return ("raw " if self.raw else "") + self.query.as_string(None)
