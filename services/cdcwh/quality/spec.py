"""Data quality tests written beside the models, in dbt's shape, validated with pydantic (pure: no I/O but
reading the YAML text handed in).

``sql/gold/<mart>.yml`` describes gold models, ``sql/silver/<table>.yml`` silver tables::

    models:
      - name: orders
        description: One row per existing order.
        columns:
          - name: order_id
            description: The order's id.
            tests: [unique, not_null]
          - name: status
            tests:
              - accepted_values: {values: [placed, shipped], config: {severity: warn}}
          - name: customer_id
            tests:
              - relationships: {to: ref('customers'), field: customer_id}
        tests:
          - expression_is_true: {expression: "amount >= 0", config: {where: "status <> 'cancelled'"}}
          - row_count: {min: 1}

``data_tests:`` is accepted for ``tests:`` (dbt 1.8's name). A test's arguments may sit at its top level or
under ``arguments:``; ``config:`` holds ``severity`` (``error``, the default, gates a gold model's batch;
``warn`` is recorded only) and ``where`` (a SQL filter on the tested rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdcwh.errors import ConfigError

Layer = Literal["gold", "silver"]
REF = re.compile(r"""^\s*ref\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]\s*\)\s*$""")
COLUMN_TESTS = frozenset({"unique", "not_null", "accepted_values", "relationships"})
MODEL_TESTS = frozenset(
    {
        "expression_is_true",
        "row_count",
        "freshness",
        "unique_combination_of_columns",
        "mutually_exclusive_ranges",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# functions a test's SQL may not call: they read files or the environment, or change state
_FORBIDDEN_FUNCTIONS = frozenset(
    {"nextval", "currval", "setseed", "getenv", "glob", "query", "query_table", "parquet_scan", "sniff_csv"}
)
_FORBIDDEN_PREFIXES = ("read_", "duckdb_", "pragma_")


def _function_name(node: sqlglot.exp.Func) -> str:
    if isinstance(node, sqlglot.exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _check_sql(text: str, what: str) -> str:
    """A SQL condition on the tested row only, re-rendered by sqlglot (comments dropped): what the test runs
    is what was checked. No subquery, SELECT, table reference, table function or side-effecting function."""
    try:
        parsed = sqlglot.parse_one(text, read="duckdb", into=sqlglot.exp.Condition)
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"{what} is not a SQL condition: {text!r} ({exc.errors[0]['description']})") from exc
    for node in parsed.walk():
        if isinstance(node, sqlglot.exp.Query | sqlglot.exp.Subquery | sqlglot.exp.Table):
            raise ValueError(f"{what} must be a condition on the row, without a subquery or table: {text!r}")
        if isinstance(node, sqlglot.exp.Func):
            name = _function_name(node)
            if name in _FORBIDDEN_FUNCTIONS or name.startswith(_FORBIDDEN_PREFIXES):
                raise ValueError(f"{what} may not call {name}(): {text!r}")
    return parsed.sql(dialect="duckdb", comments=False)


class TestConfig(_Strict):
    __test__ = False
    severity: Literal["error", "warn"] = "error"
    where: str | None = None

    @field_validator("where")
    @classmethod
    def _where_is_sql(cls, value: str | None) -> str | None:
        return None if value is None else _check_sql(value, "where")


class NoArgs(_Strict):
    pass


class AcceptedValues(_Strict):
    values: list[str | int | float | bool] = Field(min_length=1)


class Relationships(_Strict):
    to: str
    field: str

    @field_validator("to")
    @classmethod
    def _is_ref(cls, value: str) -> str:
        if not REF.match(value):
            raise ValueError(f"to must be ref('<model>'), got {value!r}")
        return value

    @property
    def target(self) -> str:
        found = REF.match(self.to)
        if found is None:  # checked by the validator
            raise ValueError(f"to must be ref('<model>'), got {self.to!r}")
        return found.group(1)


class ExpressionIsTrue(_Strict):
    expression: str

    @field_validator("expression")
    @classmethod
    def _expression_is_sql(cls, value: str) -> str:
        return _check_sql(value, "expression")


class RowCount(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> RowCount:
        if self.min is None and self.max is None:
            raise ValueError("row_count needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"row_count min {self.min} is above max {self.max}")
        return self


class Freshness(_Strict):
    column: str
    """The change timestamp column (``_updated_at`` in gold, ``__source_ts`` in silver)."""
    max_age_s: float = Field(gt=0)


class UniqueCombination(_Strict):
    combination_of_columns: list[str] = Field(min_length=1)


class MutuallyExclusiveRanges(_Strict):
    lower_bound_column: str
    upper_bound_column: str
    """NULL is an open end (the current row of an SCD2 dimension)."""
    partition_by: str | None = None
    # dbt_utils: ``not_allowed`` also fails a range whose upper bound is not the next range's lower bound
    gaps: Literal["allowed", "not_allowed"] = "allowed"


ARGUMENTS: dict[str, type[_Strict]] = {
    "unique": NoArgs,
    "not_null": NoArgs,
    "accepted_values": AcceptedValues,
    "relationships": Relationships,
    "expression_is_true": ExpressionIsTrue,
    "row_count": RowCount,
    "freshness": Freshness,
    "unique_combination_of_columns": UniqueCombination,
    "mutually_exclusive_ranges": MutuallyExclusiveRanges,
}


class ColumnSpec(_Strict):
    name: str
    description: str | None = None
    tests: list[str | dict[str, Any]] = Field(default_factory=list)
    data_tests: list[str | dict[str, Any]] = Field(default_factory=list)


class ModelSpec(_Strict):
    name: str
    description: str | None = None
    columns: list[ColumnSpec] = Field(default_factory=list)
    tests: list[str | dict[str, Any]] = Field(default_factory=list)
    data_tests: list[str | dict[str, Any]] = Field(default_factory=list)


class SchemaFile(_Strict):
    version: int | None = None
    models: list[ModelSpec]


@dataclass(frozen=True)
class TestSpec:
    """One test, resolved: what it checks, on which relation, how hard."""

    __test__ = False

    test_id: str
    model: str  # gold: the mart's name; silver: ``silver.<table>``
    layer: Layer
    table: str  # the table's name in its schema
    column: str | None
    kind: str
    args: _Strict
    severity: Literal["error", "warn"]
    where: str | None


def _split(entry: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if len(entry) != 1:
        raise ValueError(f"a test is a name or a mapping of one name to its arguments, got {sorted(entry)}")
    kind, body = next(iter(entry.items()))
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValueError(f"the arguments of {kind} must be a mapping")
    return str(kind), dict(body)


def _resolve(
    path: Path, layer: Layer, model: ModelSpec, column: str | None, entry: str | dict[str, Any], where: str
) -> tuple[str, _Strict, TestConfig]:
    kind, body = _split(entry)
    allowed = COLUMN_TESTS if column is not None else MODEL_TESTS
    if kind not in allowed:
        scope = "column" if column is not None else "model"
        known = ", ".join(sorted(allowed))
        raise ConfigError(f"{path}: {where}: unknown {scope} test {kind!r} (one of {known})")
    config = body.pop("config", None) or {}
    for key in ("severity", "where"):  # dbt also takes these beside the arguments
        if key in body:
            config[key] = body.pop(key)
    arguments = body.pop("arguments", None) or {}
    arguments.update(body)
    try:
        return kind, ARGUMENTS[kind].model_validate(arguments), TestConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {where}.{kind}: {_errors(exc)}") from exc


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())


def _line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The line (1-based) of the YAML node at ``loc`` (pydantic's error location), as deep as it goes."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1 if node is not None else line


def parse_file(path: Path, text: str, layer: Layer) -> list[TestSpec]:
    """The tests of one YAML file; a ConfigError naming the file, the key and its line when it is wrong."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        schema = SchemaFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        line = _line(root, tuple(first["loc"]))
        at = f" (line {line})" if line else ""
        raise ConfigError(f"{path}{at}: {_errors(exc)}") from exc
    specs: list[TestSpec] = []
    seen: dict[str, int] = {}
    for m, model in enumerate(schema.models):
        name = model.name if layer == "gold" else f"silver.{model.name}"
        entries: list[tuple[str | None, str, str | dict[str, Any]]] = [
            (c.name, f"models[{m}].columns[{i}]", t)
            for i, c in enumerate(model.columns)
            for t in [*c.tests, *c.data_tests]
        ]
        entries += [(None, f"models[{m}].tests", t) for t in [*model.tests, *model.data_tests]]
        for column, where, entry in entries:
            kind, args, config = _resolve(path, layer, model, column, entry, f"{model.name}: {where}")
            base = ".".join(p for p in (name, kind, column) if p)
            seen[base] = seen.get(base, 0) + 1
            test_id = base if seen[base] == 1 else f"{base}.{seen[base]}"
            specs.append(
                TestSpec(test_id, name, layer, model.name, column, kind, args, config.severity, config.where)
            )
    return specs


def _check_targets(path: Path, directory: Path, specs: list[TestSpec]) -> None:
    """A gold ``relationships`` test names a gold model: a misspelt target would hold its mart waiting."""
    for spec in specs:
        if spec.layer == "gold" and isinstance(spec.args, Relationships):
            if not (directory / f"{spec.args.target}.sql").is_file():
                raise ConfigError(
                    f"{path}: {spec.test_id}: ref('{spec.args.target}') is not a gold model "
                    f"(no {directory}/{spec.args.target}.sql)"
                )


def load_tests(sql_dir: Path) -> list[TestSpec]:
    """Every test of ``<sql_dir>/gold/*.yml`` and ``<sql_dir>/silver/*.yml``; a ConfigError on the first
    file that is wrong, on a second file describing a model, or on a gold model without its ``.sql``."""
    specs: list[TestSpec] = []
    described: dict[str, Path] = {}
    layers: tuple[Layer, ...] = ("gold", "silver")
    for layer in layers:
        directory = sql_dir / layer
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
            found = parse_file(path, path.read_text(encoding="utf-8"), layer)
            for model in sorted({s.model for s in found}):
                if layer == "gold" and not (directory / f"{model}.sql").is_file():
                    # a misspelt name would silently disable the model's tests
                    raise ConfigError(
                        f"{path}: model {model} is not a gold model (no {directory}/{model}.sql)"
                    )
                _check_targets(path, directory, [s for s in found if s.model == model])
                if model in described:
                    raise ConfigError(f"{path}: model {model} is already described in {described[model]}")
                described[model] = path
            specs += found
    return specs
