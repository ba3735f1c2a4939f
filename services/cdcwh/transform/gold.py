"""Gold: the marts of ``sql/gold/*.sql``, recomputed from silver each batch, their changes captured.

A model file is one ``SELECT`` with a header naming the mart and its primary key (``cdcwh.models`` loads
them)::

    -- mart: orders
    -- primary key: order_id

Models run in dependency order (a model that reads ``gold.<other>`` runs after it). For each model the
runner computes the new result, compares it with ``gold.<mart>`` (``EXCEPT`` both ways, keyed by the primary
key), applies the difference, stamps changed rows with the batch's version as ``_version`` (not the batch id:
``batch.next_version``, a time in microseconds that only grows, even across a lost warehouse file), and writes
one outbox row per changed key (``upsert`` with the row as JSON, or ``delete``) in the same transaction.

A model may say how a change of its inputs moves its rows::

    -- incremental: order_id from silver.orders.id, silver.payments.order_id

Then a batch recomputes only the mart rows whose ``order_id`` is among the values those source columns had
before or after the batch's changes (silver.py keeps both images). A new or edited model, a truncated or
keyless source, or a NULL among the values recomputes the whole mart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb

from cdcwh.errors import ConfigError
from cdcwh.models import GoldModel, key_json_sql, row_json_sql
from cdcwh.warehouse import (
    ChangeSet,
    changes_table,
    count,
    quote,
    read_state,
    table_exists,
    write_state,
)


@dataclass(frozen=True)
class ModelResult:
    name: str
    rows: int
    upserts: int
    deletes: int


def refresh_model(
    con: duckdb.DuckDBPyConnection,
    model: GoldModel,
    version: int,
    changes: ChangeSet | None = None,
    *,
    full: bool = False,
) -> ModelResult:
    """Recompute one mart (all of it, or with ``changes`` and an ``incremental`` header only the rows the
    batch's changes touch), apply its difference to ``gold.<mart>`` and queue the changes in the outbox.
    ``full`` recomputes all of it even so (a mart that missed batches: their changes were not kept for it);
    with ``changes`` its changed rows are still captured for the models that read it."""
    target = f"gold.{quote(model.name)}"
    existed = table_exists(con, "gold", model.name)
    same_sql = sql_unchanged(con, model)
    incremental = existed and same_sql and changes is not None and not full
    scope = incremental_scope(con, model, changes) if incremental and changes is not None else None
    if scope == "":
        return ModelResult(model.name, count(con, f"SELECT count(*) FROM {target}"), 0, 0)
    where = f" AS m WHERE {scope}" if scope else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE model_new AS SELECT * FROM ({model.sql}){where}")
    described = con.execute("SELECT column_name, column_type FROM (DESCRIBE model_new)").fetchall()
    columns = [str(name) for name, _ in described]
    required = [*model.primary_key, *([model.incremental.column] if model.incremental else [])]
    missing = [k for k in required if k not in columns]
    if missing:
        raise ConfigError(f"{model.path}: column(s) {missing} of the header are not in the SELECT")
    if not existed:
        con.execute(
            f"CREATE TABLE {target} AS SELECT *, 0::BIGINT AS _version, "
            f"now()::TIMESTAMPTZ AS _updated_at FROM model_new LIMIT 0"
        )
    elif not same_sql:  # an edited model may have changed a column's type (money sums widened to 38 digits)
        have = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'gold' "
                "AND table_name = ?",
                [model.name],
            ).fetchall()
        )
        for name, kind in described:
            if str(name) in have and have[str(name)] != str(kind):
                con.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(str(name))} TYPE {kind}")
    cols = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(k) for k in model.primary_key)
    current = f"(SELECT * FROM {target}{where})" if scope else target
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE model_upserts AS "
        f"SELECT {cols} FROM model_new EXCEPT SELECT {cols} FROM {current}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE model_deletes AS "
        f"SELECT {keys} FROM {current} EXCEPT SELECT {keys} FROM model_new"
    )
    match = " AND ".join(f"t.{quote(k)} IS NOT DISTINCT FROM c.{quote(k)}" for k in model.primary_key)
    captured = changes_table("gold", model.name)
    if changes is not None:  # the images before of the rows about to change, for the models reading this mart
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {captured} AS SELECT {cols} FROM {target} AS t SEMI JOIN "
            f"(SELECT {keys} FROM model_upserts UNION ALL SELECT {keys} FROM model_deletes) AS c ON {match}"
        )
    for changed in ("model_upserts", "model_deletes"):
        con.execute(f"DELETE FROM {target} AS t USING {changed} AS c WHERE {match}")
    con.execute(
        f"INSERT INTO {target} ({cols}, _version, _updated_at) "
        f"SELECT {cols}, {version}, now() FROM model_upserts"
    )
    if changes is not None:  # and after
        con.execute(f"INSERT INTO {captured} SELECT {cols} FROM model_upserts")
        changes.captured.add(("gold", model.name))
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
    rows = count(con, f"SELECT count(*) FROM {target}")
    return ModelResult(model.name, rows, upserts, deletes)


def incremental_scope(con: duckdb.DuckDBPyConnection, model: GoldModel, changes: ChangeSet) -> str | None:
    """The filter (on alias ``m``) of the mart rows the batch's changes touch: None to recompute all of
    it, "" when the batch touched none of the model's inputs."""
    spec = model.incremental
    if spec is None or any((schema, table) in changes.full for schema, table, _ in spec.sources):
        return None
    touched = " UNION ALL ".join(
        f"SELECT {quote(column)} AS v FROM {changes_table(schema, table)}"
        for schema, table, column in spec.sources
        if (schema, table) in changes.captured
    )
    if not touched:
        return ""
    values, nulls = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE v IS NULL) FROM ({touched})"
    ).fetchall()[0]
    if not values:
        return ""
    if nulls:  # IN never matches NULL, and IS NOT DISTINCT FROM keeps DuckDB from pushing the filter down
        return None
    return f"m.{quote(spec.column)} IN (SELECT v FROM ({touched}))"


def sql_unchanged(con: duckdb.DuckDBPyConnection, model: GoldModel) -> bool:
    """Whether the model's SQL is the one that computed the mart; records it. An edited model is recomputed
    in full once, since its change may touch any row."""
    digest = int.from_bytes(hashlib.blake2b(model.sql.encode(), digest_size=8).digest(), "big", signed=True)
    name = f"gold_sql:{model.name}"
    previous = read_state(con, name)
    if previous != digest:
        write_state(con, name, digest)
    return previous == digest
