"""The semantic model: entities over marts, their dimensions and measures, joins along the star schema, and
the access policy (roles -> readable members, row filters bound to token claims).

Loaded from ``schemas/semantic/*.yml`` (docs/serving.md) and validated at start: a pydantic error, an
unknown join target or member, or a name defined twice, is reported with the file and line it is on. Pure:
no I/O beyond reading the files given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from cdcwh.errors import ConfigError

NAME = r"^[a-z][a-z0-9_]*$"
MEMBER = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*|\*)$")
Granularity = Literal["day", "week", "month", "year"]
KINDS = {"entities": "entity", "roles": "role"}
GRANULARITIES: tuple[Granularity, ...] = ("day", "week", "month", "year")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(Strict):
    """A static condition of the model: ``column`` equals one of ``in_`` (values are bound as parameters)."""

    column: str = Field(pattern=NAME)
    in_: list[str | int | bool] = Field(alias="in", min_length=1)


class Dimension(Strict):
    column: str = Field(pattern=NAME)
    type: Literal["string", "number", "boolean", "time"] = "string"
    description: str = ""


class Measure(Strict):
    agg: Literal["sum", "count", "count_distinct", "average", "min", "max"]
    column: str = Field(pattern=NAME)
    filters: list[Condition] = Field(default_factory=list)
    """Only the rows meeting every condition count (``agg(...) FILTER (WHERE ...)``)."""
    description: str = ""


class Join(Strict):
    """A many-to-one join: each row of this entity has at most one row of ``entity``."""

    entity: str = Field(pattern=NAME)
    keys: dict[str, str] = Field(min_length=1)
    """This entity's column -> the joined entity's column (not ``on``: YAML 1.1 reads that as true)."""


class Entity(Strict):
    mart: str = Field(pattern=NAME)
    primary_key: list[str] = Field(min_length=1)
    """The columns identifying a row of the entity (the order of its typed mart field's pages)."""
    description: str = ""
    filters: list[Condition] = Field(default_factory=list)
    """Rows outside them are not part of the entity (e.g. only the current version of an SCD 2 dimension)."""
    dimensions: dict[str, Dimension] = Field(default_factory=dict)
    measures: dict[str, Measure] = Field(default_factory=dict)
    joins: dict[str, Join] = Field(default_factory=dict)


class RowFilter(Strict):
    """Only rows whose ``dimension`` equals the token's ``claim``. ``required``: a token without the claim
    reads nothing the filter covers; otherwise the filter applies only when the claim is present."""

    dimension: str
    claim: str = Field(pattern=NAME)
    required: bool = True
    exempt: list[str] = Field(default_factory=list)
    """Entities the filter does not cover (their rows are nobody's: products, say). A query on any other
    entity that cannot reach ``dimension`` through its joins is refused while the filter applies."""


class Role(Strict):
    members: list[str] = Field(min_length=1)
    """``entity.member`` or ``entity.*``."""
    row_filters: list[RowFilter] = Field(default_factory=list)


class ModelFile(Strict):
    entities: dict[str, Entity] = Field(default_factory=dict)
    roles: dict[str, Role] = Field(default_factory=dict)


class SemanticModel(Strict):
    entities: dict[str, Entity]
    roles: dict[str, Role]
    _where: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)
    """("entities", name[, "dimensions"|"measures", member]) -> "file:line" (when loaded from files)."""

    def columns(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """mart -> column -> the places of the model reading it ("file:line: entity.member")."""
        needed: dict[str, dict[str, tuple[str, ...]]] = {}

        def need(entity: str, column: str, what: str, *member: str) -> None:
            mart = self.entities[entity].mart
            at = self._where.get(("entities", entity, *member)) or self._where.get(("entities", entity), "?")
            places = needed.setdefault(mart, {}).setdefault(column, ())
            needed[mart][column] = (*places, f"{at}: {entity}.{what}")

        for name, entity in self.entities.items():
            for column in entity.primary_key:
                need(name, column, "primary_key")
            for condition in entity.filters:
                need(name, condition.column, "filters")
            for kind, members in (("dimensions", entity.dimensions), ("measures", entity.measures)):
                for member, definition in members.items():
                    need(name, definition.column, member, kind, member)
                    for condition in getattr(definition, "filters", []):
                        need(name, condition.column, member, kind, member)
            for join_name, join in entity.joins.items():
                for mine, theirs in join.keys.items():
                    need(name, mine, f"joins.{join_name}")
                    need(join.entity, theirs, f"joins.{join_name} (from {name})")
        return needed

    def missing_in(self, tables: dict[str, set[str]]) -> list[str]:
        """What the model reads that the warehouse lacks (``tables``: mart -> its columns)."""
        problems = []
        for mart, columns in sorted(self.columns().items()):
            if mart not in tables:
                entities = sorted(n for n, e in self.entities.items() if e.mart == mart)
                at = ", ".join(self._where.get(("entities", n), "?") for n in entities)
                problems.append(f"{at}: mart {mart} does not exist")
                continue
            for column, places in sorted(columns.items()):
                if column not in tables[mart]:
                    problems.extend(f"{place}: mart {mart} has no column {column}" for place in places)
        return problems

    def member(self, ref: str) -> tuple[str, str, Dimension | Measure]:
        """``entity.name`` -> (entity, name, its definition); KeyError when there is none."""
        match = MEMBER.match(ref)
        if match is None or match.group(2) == "*":
            raise KeyError(ref)
        entity, name = match.groups()
        definition = self.entities[entity]
        found = definition.dimensions.get(name) or definition.measures.get(name)
        if found is None:
            raise KeyError(ref)
        return entity, name, found

    def marts(self) -> set[str]:
        return {entity.mart for entity in self.entities.values()}


def _line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest ancestor found."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]  # the key's line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _parse(path: Path) -> tuple[ModelFile, yaml.Node | None]:
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    try:
        return ModelFile.model_validate(data), node
    except ValidationError as exc:
        problems = [
            f"{path}:{_line(node, tuple(e['loc']))}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("invalid semantic model:\n  " + "\n  ".join(problems)) from exc


def load_model(directory: Path) -> SemanticModel:
    """Every ``*.yml`` under ``directory``, merged and checked; ``ConfigError`` naming file and line."""
    files = sorted(directory.glob("*.yml"))
    if not files:
        raise ConfigError(f"no semantic model: no *.yml file in {directory}")
    entities: dict[str, Entity] = {}
    roles: dict[str, Role] = {}
    where: dict[tuple[str, ...], str] = {}  # ("entities", name, ...) -> "file:line"
    problems: list[str] = []
    for path in files:
        parsed, node = _parse(path)
        for kind, items, target in (("entities", parsed.entities, entities), ("roles", parsed.roles, roles)):
            for name, item in items.items():
                here = f"{path}:{_line(node, (kind, name))}"
                if name in target:
                    first = where[(kind, name)]
                    problems.append(f"{here}: {KINDS[kind]} {name} is already defined at {first}")
                    continue
                target[name] = item  # type: ignore[assignment]
                where[(kind, name)] = here
                for member_kind in ("dimensions", "measures") if kind == "entities" else ():
                    for member in getattr(item, member_kind):
                        line = _line(node, (kind, name, member_kind, member))
                        where[(kind, name, member_kind, member)] = f"{path}:{line}"
    model = SemanticModel(entities=entities, roles=roles)
    model._where = where
    problems.extend(_check(model, where))
    if problems:
        raise ConfigError("invalid semantic model:\n  " + "\n  ".join(problems))
    return model


def _check(model: SemanticModel, where: dict[tuple[str, ...], str]) -> list[str]:
    problems = []
    for name, entity in model.entities.items():
        here = where[("entities", name)]
        clash = entity.dimensions.keys() & entity.measures.keys()
        if clash:
            problems.append(f"{here}: entity {name}: {sorted(clash)} both a dimension and a measure")
        for join_name, join in entity.joins.items():
            if join.entity not in model.entities:
                problems.append(f"{here}: entity {name}: join {join_name}: no entity {join.entity}")
    for name, role in model.roles.items():
        here = where[("roles", name)]
        for ref in role.members:
            match = MEMBER.match(ref)
            if match is None or match.group(1) not in model.entities:
                problems.append(f"{here}: role {name}: no entity for member {ref!r}")
            elif match.group(2) != "*" and not _defined(model, ref):
                problems.append(f"{here}: role {name}: no member {ref!r}")
        for row_filter in role.row_filters:
            if not _defined(model, row_filter.dimension, dimension=True):
                problems.append(
                    f"{here}: role {name}: row filter on {row_filter.dimension!r}: no such dimension"
                )
            problems.extend(
                f"{here}: role {name}: row filter exempts {e!r}: no such entity"
                for e in row_filter.exempt
                if e not in model.entities
            )
    return problems


def _defined(model: SemanticModel, ref: str, *, dimension: bool = False) -> bool:
    try:
        _, _, found = model.member(ref)
    except KeyError:
        return False
    return isinstance(found, Dimension) or not dimension
