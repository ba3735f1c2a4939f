"""The gold model catalog: every ``sql/gold/*.sql`` file, its header, and the tables its SQL reads.

A model file is one ``SELECT`` (CTEs are fine) that starts with a header of ``--`` comment lines::

    -- mart: orders
    -- primary key: order_id
    -- incremental: order_id from silver.orders.id, silver.payments.order_id

``mart`` and ``primary key`` are required; ``incremental`` is optional (``transform/gold.py`` uses it). The
file is the whole definition of a mart: the transform computes it, the sink derives the PostgreSQL table
from its result types (``types.py``), and the tests read the same header.

The tables a model reads come from parsing its SQL with sqlglot (DuckDB dialect), not from a pattern over
the text, so ``gold.orders`` in a comment or a string literal is not a dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import sqlglot
from sqlglot import exp

from cdcwh.errors import ConfigError

HEADER_LINE = re.compile(r"^--\s*(mart|primary key|incremental):\s*(.+?)\s*$")
SOURCE_COLUMN = re.compile(
    r"^(silver|gold)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$", re.IGNORECASE
)
SCHEMAS = frozenset({"silver", "silver_history", "gold"})  # the schemas a model may read


@dataclass(frozen=True)
class Incremental:
    """``-- incremental: <column> from <schema>.<table>.<column>, ...``: a batch recomputes only the mart rows
    whose ``column`` is among the values the listed source columns had before or after the batch's changes."""

    column: str
    sources: tuple[tuple[str, str, str], ...]  # (schema, table, column)


@dataclass(frozen=True)
class GoldModel:
    name: str
    primary_key: tuple[str, ...]
    sql: str
    path: Path
    incremental: Incremental | None = None

    @cached_property  # a frozen dataclass without slots keeps an instance __dict__ for it
    def reads(self) -> frozenset[tuple[str, str]]:
        """(schema, table) of every silver, silver_history and gold table the SQL reads, lower case."""
        return tables_read(self.sql, self.path)

    @property
    def depends_on(self) -> set[str]:
        """The other marts this one reads (``gold.<mart>``): they are built before it."""
        return {name for schema, name in self.reads if schema == "gold"} - {self.name}


def tables_read(text: str, path: Path) -> frozenset[tuple[str, str]]:
    """The (schema, table) pairs of ``silver``, ``silver_history`` and ``gold`` the one statement in ``text``
    reads; a file that is not one parsable query is a ConfigError naming it."""
    try:
        statements = [s for s in sqlglot.parse(text, dialect="duckdb") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"{path}: sqlglot cannot parse the model (DuckDB dialect): {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ConfigError(f"{path}: a gold model is one SELECT statement")
    return frozenset(
        (table.db.lower(), table.name.lower())
        for table in statements[0].find_all(exp.Table)
        if table.db.lower() in SCHEMAS
    )


def parse_header(text: str, path: Path) -> dict[str, str]:
    """The ``-- <name>: <value>`` lines of the comment block the file starts with."""
    header: dict[str, str] = {}
    for line in text.lstrip().splitlines():
        if not line.startswith("--"):
            break
        match = HEADER_LINE.match(line.strip())
        if match is None:
            continue
        name, value = match.groups()
        if name in header:
            raise ConfigError(f"{path}: the header names '{name}' twice")
        header[name] = value
    if "mart" not in header or "primary key" not in header:
        raise ConfigError(f"{path}: a gold model starts with '-- mart: <name>' and '-- primary key: <cols>'")
    return header


def load_model(path: Path) -> GoldModel:
    """One model file; a bad header or SQL that is not one query is a ConfigError naming the file."""
    text = path.read_text()
    header = parse_header(text, path)
    key = tuple(column.strip() for column in header["primary key"].split(","))
    if not all(key):
        raise ConfigError(f"{path}: '-- primary key: <col>[, <col> ...]', not {header['primary key']!r}")
    model = GoldModel(name=header["mart"].lower(), primary_key=key, sql=text.strip().rstrip(";"), path=path)
    model.reads  # noqa: B018  (parse now: a broken model fails at load, naming its file)
    if "incremental" in header:
        model = replace(model, incremental=parse_incremental(model, header["incremental"]))
    return model


def load_models(directory: Path) -> list[GoldModel]:
    """Every ``*.sql`` under ``directory``, in dependency order; a bad header, two files for one mart or a
    cycle is a ConfigError."""
    models: dict[str, GoldModel] = {}
    for path in sorted(directory.glob("*.sql")):
        model = load_model(path)
        if model.name in models:
            raise ConfigError(f"{path}: mart {model.name} is already defined by {models[model.name].path}")
        models[model.name] = model
    graph = {name: model.depends_on & models.keys() for name, model in models.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise ConfigError(f"gold models in {directory} depend on each other in a cycle: {exc}") from exc
    return [models[name] for name in order]


def parse_incremental(model: GoldModel, text: str) -> Incremental:
    """The ``incremental`` header; it must say how a change of every table the model reads moves its rows."""
    column, sep, rest = text.partition(" from ")
    if not sep or not column.strip():
        raise ConfigError(f"{model.path}: '-- incremental: <column> from <schema>.<table>.<column>, ...'")
    sources = []
    for item in rest.split(","):
        match = SOURCE_COLUMN.match(item.strip())
        if match is None:
            raise ConfigError(
                f"{model.path}: '-- incremental: <column> from <schema>.<table>.<column>, ...' "
                f"(schema silver or gold), not {item.strip()!r}"
            )
        schema, table, source_column = match.groups()
        sources.append((schema.lower(), table.lower(), source_column))
    listed = {(schema, table) for schema, table, _ in sources}
    listed |= {("silver_history", table) for schema, table in listed if schema == "silver"}
    unlisted = sorted(model.reads - listed - {("gold", model.name)})
    if unlisted:
        raise ConfigError(
            f"{model.path}: reads {', '.join('.'.join(ref) for ref in unlisted)}, but the incremental header "
            f"does not say which {column.strip()} values a change there touches"
        )
    return Incremental(column=column.strip(), sources=tuple(sources))
