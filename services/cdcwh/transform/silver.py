"""Silver: the current state of every source table, applied from bronze changes in DuckDB.

For one table and one batch of bronze rows (``batch``, registered as an Arrow view):

1. order the changes by source position: LSN where the connector has one, then Kafka partition and offset
   (per key that is the source order: one key lives in one partition), and drop redeliveries: a change whose
   LSN is not above the highest LSN already applied to its key (earlier in the batch, or in an earlier batch
   as ``silver_history`` records) was applied before;
2. resolve TOAST: a column listed in ``__toasted`` takes the last earlier value of the same key in the batch,
   else the value silver already holds;
3. append every change to ``silver_history.<table>`` (the changelog SCD2 models read);
4. per key keep the last change: delete the key from ``silver.<table>``, then insert the row unless the last
   change was a delete. Snapshot reads (``r``) are upserts like creates and updates.

Debezium re-sends changes after a connector restart; dropping them by LSN keeps them out of the history
(where they would start SCD2 versions again) and keeps a stale image from overwriting a newer one.
Tombstones carry nothing silver needs. A truncate (``t``) empties the table and discards the batch's earlier
changes. Tables without a key (no primary key in the source) keep only their history.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.transform.warehouse import ChangeSet, changes_table, count, quote, table_exists

META = ("__op", "__source_ts", "__lsn", "__seq")
CHANGE_OPS = ("r", "c", "u", "d")


def data_columns(rows: pa.Table) -> list[str]:
    return [name for name in rows.column_names if not name.startswith("__")]


def key_columns(rows: pa.Table) -> list[str]:
    """The source primary key's columns; none for a table without one, whose bronze rows have no ``__key``
    (or only a null one)."""
    if "__key" not in rows.column_names:
        return []
    key_type = rows.schema.field("__key").type
    return [field.name for field in key_type] if pa.types.is_struct(key_type) else []


def ensure_tables(con: duckdb.DuckDBPyConnection, name: str, columns: list[str]) -> None:
    """Create ``silver.<name>`` and ``silver_history.<name>`` shaped like the batch, or add new columns."""
    select = ", ".join([quote(c) for c in columns] + ["__op", "__source_ts", "__lsn", "0::BIGINT AS __seq"])
    for schema in ("silver", "silver_history"):
        target = f"{schema}.{quote(name)}"
        if not table_exists(con, schema, name):
            con.execute(f"CREATE TABLE {target} AS SELECT {select} FROM resolved LIMIT 0")
            continue
        have = {
            row[0]: row[1]
            for row in con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = ? AND table_name = ?",
                [schema, name],
            ).fetchall()
        }
        incoming = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE resolved)").fetchall())
        for column in columns:
            if column not in have:
                con.execute(f"ALTER TABLE {target} ADD COLUMN {quote(column)} {incoming[column]}")
            elif have[column] != incoming[column]:
                con.execute(f"ALTER TABLE {target} ALTER {quote(column)} TYPE {incoming[column]}")


def apply_changes(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rows: pa.Table,
    first_seq: int,
    changes: ChangeSet | None = None,
) -> int:
    """Apply one batch of bronze rows of table ``name``; returns the number of changes applied. With
    ``changes``, the changed rows' images before and after are kept for the incremental gold models."""
    rows = rows.filter(pc.is_in(rows["__op"], pa.array([*CHANGE_OPS, "t"])))
    if rows.num_rows == 0:
        return 0
    columns = data_columns(rows)
    keys = key_columns(rows)
    con.register("batch", rows)
    try:
        order = "__lsn NULLS LAST, __partition, __offset"
        key_exprs = [f"coalesce({quote(k)}, __key.{quote(k)}) AS {quote(k)}" for k in keys]
        others = [quote(c) for c in columns if c not in keys]
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE ordered AS
            SELECT {", ".join([*key_exprs, *others])}, __op, __source_ts, __lsn,
                   coalesce(__toasted, []) AS __toasted,
                   {first_seq} + row_number() OVER (ORDER BY {order}) AS __seq
            FROM batch"""
        )
        if keys:
            _drop_redelivered(con, name, keys)
        truncated_at = count(con, "SELECT coalesce(max(__seq), -1) FROM ordered WHERE __op = 't'")
        if truncated_at >= 0:
            if changes is not None:
                changes.full.add(("silver", name))
            if table_exists(con, "silver", name):
                con.execute(f"DELETE FROM silver.{quote(name)}")
            con.execute(f"DELETE FROM ordered WHERE __seq <= {truncated_at}")
        _resolve_toast(con, name, columns, keys)
        ensure_tables(con, name, columns)
        select = ", ".join([quote(c) for c in columns] + list(META))
        con.execute(f"INSERT INTO silver_history.{quote(name)} ({select}) SELECT {select} FROM resolved")
        applied = count(con, "SELECT count(*) FROM resolved")
        if keys:
            key_list = ", ".join(quote(k) for k in keys)
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE latest AS SELECT * FROM resolved
                QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY __seq DESC) = 1"""
            )
            match = " AND ".join(f"s.{quote(k)} = l.{quote(k)}" for k in keys)
            captured = changes_table("silver", name)
            if changes is not None:  # the images before: the current rows of the changed keys
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {captured} AS SELECT {select} "
                    f"FROM silver.{quote(name)} AS s SEMI JOIN latest AS l ON {match}"
                )
            con.execute(f"DELETE FROM silver.{quote(name)} AS s USING latest AS l WHERE {match}")
            con.execute(
                f"INSERT INTO silver.{quote(name)} ({select}) SELECT {select} FROM latest WHERE __op <> 'd'"
            )
            if changes is not None:  # and after. A delete's row holds only its key: where the key had a row
                # before, that image says all; where not (created and deleted within the batch), the delete's
                # row stands for the key, whose changes went into silver_history
                con.execute(
                    f"INSERT INTO {captured} ({select}) SELECT {select} FROM latest AS s WHERE s.__op <> 'd' "
                    f"OR NOT EXISTS (SELECT 1 FROM {captured} AS l WHERE {match})"
                )
                changes.captured.add(("silver", name))
        elif changes is not None:
            changes.full.add(("silver", name))
        return applied
    finally:
        con.unregister("batch")


def _drop_redelivered(con: duckdb.DuckDBPyConnection, name: str, keys: list[str]) -> None:
    """Delete from ``ordered`` the changes at or below an LSN already applied to their key (changes without
    an LSN are kept: only LSNs order a key's changes across deliveries)."""
    key_list = ", ".join(quote(k) for k in keys)
    con.execute(
        f"""DELETE FROM ordered WHERE __seq IN (
            SELECT __seq FROM ordered WHERE __lsn IS NOT NULL AND __op <> 't'
            QUALIFY __lsn <= max(__lsn) OVER (
                PARTITION BY {key_list} ORDER BY __seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))"""
    )
    if not table_exists(con, "silver_history", name):
        return
    history = f"silver_history.{quote(name)}"
    match = " AND ".join(f"h.{quote(k)} = b.{quote(k)}" for k in keys)
    con.execute(
        f"""DELETE FROM ordered AS o USING (
            SELECT {", ".join(f"h.{quote(k)}" for k in keys)}, max(h.__lsn) AS applied_lsn
            FROM {history} AS h SEMI JOIN (SELECT DISTINCT {key_list} FROM ordered) AS b ON {match}
            GROUP BY ALL
        ) AS a
        WHERE o.__lsn <= a.applied_lsn AND """
        + " AND ".join(f"o.{quote(k)} = a.{quote(k)}" for k in keys)
    )


def _resolve_toast(con: duckdb.DuckDBPyConnection, name: str, columns: list[str], keys: list[str]) -> None:
    toasted = {
        row[0]
        for row in con.execute("SELECT DISTINCT unnest(__toasted) FROM ordered").fetchall()
        if row[0] in columns
    }
    if not toasted or not keys:
        con.execute("CREATE OR REPLACE TEMP TABLE resolved AS SELECT * EXCLUDE (__toasted) FROM ordered")
        return
    partition = ", ".join(f"o.{quote(k)}" for k in keys)
    carried = []
    for column in sorted(toasted):
        c = quote(column)
        literal = "'" + column.replace("'", "''") + "'"
        # the value wrapped in a struct, so that a real NULL is still "a value" for IGNORE NULLS
        wrapped = f"CASE WHEN NOT list_contains(o.__toasted, {literal}) THEN {{'v': o.{c}}} END"
        window = f"PARTITION BY {partition} ORDER BY o.__seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
        previous = f"last_value({wrapped} IGNORE NULLS) OVER ({window})"
        carried.append(
            f"CASE WHEN list_contains(o.__toasted, {literal}) "
            f"THEN coalesce(({previous}).v, s.{c}) ELSE o.{c} END AS {c}"
        )
    exists = table_exists(con, "silver", name)
    join = " AND ".join(f"s.{quote(k)} = o.{quote(k)}" for k in keys)
    source = (
        f"LEFT JOIN silver.{quote(name)} AS s ON {join}"
        if exists
        else "LEFT JOIN (SELECT "
        + ", ".join(f"NULL AS {quote(c)}" for c in [*toasted, *keys])
        + ") AS s ON false"
    )
    keep = ", ".join(f"o.{quote(c)}" for c in columns if c not in toasted)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE resolved AS
        SELECT {keep}{", " if keep else ""}{", ".join(carried)}, o.__op, o.__source_ts, o.__lsn, o.__seq
        FROM ordered AS o {source}"""
    )
