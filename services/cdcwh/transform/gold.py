"""Gold: the marts of ``sql/gold/*.sql``, recomputed from silver each batch, their changes captured.

A model file is one ``SELECT`` with a header naming the mart and its primary key::

    -- mart: orders
    -- primary key: order_id

Models run in dependency order (a model that reads ``gold.<other>`` runs after it). For each model the
runner computes the new result, compares it with ``gold.<mart>`` (``EXCEPT`` both ways, keyed by the primary
key), applies the difference, stamps changed rows with the batch's ``_version``, and writes one outbox row
per changed key (``upsert`` with the row as JSON, or ``delete``) in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

import duckdb

from cdcwh.errors import ConfigError
from cdcwh.transform.warehouse import count, quote

HEADER = re.compile(r"^--\s*(mart|primary key):\s*(.+?)\s*$", re.MULTILINE)
REFERENCE = re.compile(r"\b(gold|silver|silver_history)\.\"?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


@dataclass(frozen=True)
class GoldModel:
    name: str
    primary_key: tuple[str, ...]
    sql: str
    path: Path

    @property
    def reads(self) -> set[tuple[str, str]]:
        """(schema, table) of every silver, silver_history and gold table the SQL names."""
        return {(schema.lower(), name.lower()) for schema, name in REFERENCE.findall(self.sql)}

    @property
    def depends_on(self) -> set[str]:
        return {name for schema, name in self.reads if schema == "gold"} - {self.name}


def load_models(directory: Path) -> list[GoldModel]:
    """Every ``*.sql`` under ``directory``, in dependency order; a bad header or a cycle is a ConfigError."""
    models: dict[str, GoldModel] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        header = dict(HEADER.findall(text))
        if "mart" not in header or "primary key" not in header:
            raise ConfigError(
                f"{path}: a gold model starts with '-- mart: <name>' and '-- primary key: <cols>'"
            )
        name = header["mart"].lower()
        key = tuple(column.strip() for column in header["primary key"].split(","))
        models[name] = GoldModel(name=name, primary_key=key, sql=text.strip().rstrip(";"), path=path)
    graph = {name: model.depends_on & models.keys() for name, model in models.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except Exception as exc:
        raise ConfigError(f"gold models in {directory} depend on each other in a cycle: {exc}") from exc
    return [models[name] for name in order]


def key_json_sql(primary_key: tuple[str, ...]) -> str:
    """DuckDB expression: the primary key as a JSON object (the Kafka key of a gold change)."""
    return "to_json({" + ", ".join(f"{literal(k)}: {quote(k)}" for k in primary_key) + "})"


def row_json_sql(columns: list[tuple[str, str]]) -> str:
    """DuckDB expression: the row as a JSON object, decimals as strings (money is never a float between
    Debezium and Postgres)."""
    fields = (
        f"{literal(name)}: {quote(name)}" + ("::VARCHAR" if kind.startswith("DECIMAL") else "")
        for name, kind in columns
    )
    return "to_json({" + ", ".join(fields) + "})"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class ModelResult:
    name: str
    rows: int
    upserts: int
    deletes: int


def refresh_model(con: duckdb.DuckDBPyConnection, model: GoldModel, version: int) -> ModelResult:
    """Recompute one mart, apply its difference to ``gold.<mart>`` and queue the changes in the outbox."""
    target = f"gold.{quote(model.name)}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE model_new AS {model.sql}")
    described = con.execute("SELECT column_name, column_type FROM (DESCRIBE model_new)").fetchall()
    columns = [str(name) for name, _ in described]
    missing = [k for k in model.primary_key if k not in columns]
    if missing:
        raise ConfigError(f"{model.path}: primary key column(s) {missing} are not in the SELECT")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {target} AS SELECT *, 0::BIGINT AS _version, "
        f"now()::TIMESTAMPTZ AS _updated_at FROM model_new LIMIT 0"
    )
    cols = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(k) for k in model.primary_key)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE model_upserts AS "
        f"SELECT {cols} FROM model_new EXCEPT SELECT {cols} FROM {target}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE model_deletes AS "
        f"SELECT {keys} FROM {target} EXCEPT SELECT {keys} FROM model_new"
    )
    match = " AND ".join(f"t.{quote(k)} IS NOT DISTINCT FROM c.{quote(k)}" for k in model.primary_key)
    for changed in ("model_upserts", "model_deletes"):
        con.execute(f"DELETE FROM {target} AS t USING {changed} AS c WHERE {match}")
    con.execute(
        f"INSERT INTO {target} ({cols}, _version, _updated_at) "
        f"SELECT {cols}, {version}, now() FROM model_upserts"
    )
    key_json = key_json_sql(model.primary_key)
    row_json = row_json_sql([(str(name), str(kind)) for name, kind in described])
    con.execute(
        f'INSERT INTO cdcwh.outbox (version, mart, key, op, "row", created_at) '
        f"SELECT {version}, ?, {key_json}, 'upsert', {row_json}, now() FROM model_upserts "
        f"UNION ALL SELECT {version}, ?, {key_json}, 'delete', NULL, now() FROM model_deletes",
        [model.name, model.name],
    )
    upserts = count(con, "SELECT count(*) FROM model_upserts")
    deletes = count(con, "SELECT count(*) FROM model_deletes")
    rows = count(con, "SELECT count(*) FROM model_new")
    return ModelResult(model.name, rows, upserts, deletes)
