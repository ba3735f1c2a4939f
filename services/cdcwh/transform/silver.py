"""Silver: the current state of every source table, applied from bronze changes in DuckDB.

For one table and one batch of bronze rows (``batch``, registered as an Arrow view):

1. order the changes by source position: LSN where the connector has one, then Kafka partition and offset
   (per key that is the source order: one key lives in one partition), and drop redeliveries: a change whose
   LSN is not above the highest LSN already applied to its key (earlier in the batch, or in an earlier batch
   as ``silver_history`` records) was applied before;
2. resolve TOAST: a column listed in ``__toasted`` takes the last earlier value of the same key in the batch,
   else the value silver already holds;
3. append every change to ``silver_history.<table>`` (the changelog SCD2 models read), and count the
   creates, updates and deletes per minute of source commit time (``cdcwh.volume_minutes``, for volume
   anomalies);
4. per key keep the last change: delete the key from ``silver.<table>``, then insert the row unless the last
   change was a delete. Snapshot reads (``r``) are upserts like creates and updates.

Debezium re-sends changes after a connector restart; dropping them by LSN keeps them out of the history
(where they would start SCD2 versions again) and keeps a stale image from overwriting a newer one.
Tombstones carry nothing silver needs. A truncate (``t``) empties the table and discards the batch's earlier
changes. Tables without a key (no primary key in the source) keep only their history.

Schema changes: the PostgreSQL connector sends no DDL, and bronze keeps every column it ever saw (a column
missing from an event reads as null), so a dropped or renamed column shows only as nulls. A column is taken
as no longer arriving when, from a change that cleared the value its key had (earlier in the batch, or in
silver), to the end of the batch, every row change has it null (``_vanished``). It is recorded in
``cdcwh.silver_columns`` (status ``not maintained``, since which batch), commented on in silver, and logged;
a later value marks it maintained again (docs/operations.md, "Schema changes (DDL)").
"""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cdcwh.warehouse import ChangeSet, changes_table, count, count_volume, quote, table_exists

log = logging.getLogger(__name__)

META = ("__op", "__source_ts", "__lsn", "__seq")
CHANGE_OPS = ("r", "c", "u", "d")
# cdcwh.silver_columns: the columns whose values stopped arriving (dropped or renamed in the source, or so it
# looks), made when a first one is seen
NOT_MAINTAINED = "not maintained"
MAINTAINED = "maintained"
COLUMNS_TABLE = """CREATE TABLE IF NOT EXISTS cdcwh.silver_columns (
    table_name VARCHAR NOT NULL, column_name VARCHAR NOT NULL, status VARCHAR NOT NULL,
    since_batch BIGINT NOT NULL, changed_at TIMESTAMPTZ NOT NULL, detail VARCHAR,
    PRIMARY KEY (table_name, column_name))"""


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
    *,
    batch_id: int = 0,
) -> int:
    """Apply one batch of bronze rows of table ``name``; returns the number of changes applied. With
    ``changes``, the changed rows' images before and after are kept for the incremental gold models. Columns
    that stop arriving are recorded as not maintained since ``batch_id`` (``_vanished``)."""
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
        had = _silver_columns(con, name)
        vanished, arriving = _vanished(con, name, [c for c in columns if c not in keys], keys, set(had))
        ensure_tables(con, name, columns)
        if vanished or any(had.get(c) for c in arriving):
            new = [c for c in columns if had and c not in had]
            _track_columns(con, name, batch_id, vanished, arriving, new, had)
        select = ", ".join([quote(c) for c in columns] + list(META))
        con.execute(f"INSERT INTO silver_history.{quote(name)} ({select}) SELECT {select} FROM resolved")
        count_volume(con, name, "resolved")
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


def _silver_columns(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, bool]:
    """``silver.<name>``'s columns (none when it does not exist yet), True for those marked not maintained."""
    rows = con.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE schema_name = 'silver' AND table_name = ?",
        [name],
    ).fetchall()
    return {str(column): str(comment or "").startswith(NOT_MAINTAINED) for column, comment in rows}


def _vanished(
    con: duckdb.DuckDBPyConnection, name: str, columns: list[str], keys: list[str], in_silver: set[str]
) -> tuple[dict[str, int], set[str]]:
    """The columns that stop arriving in this batch (column -> the ``__seq`` of the change where they
    stopped), and the columns that carry a value in it.

    Bronze cannot tell a column absent from an event's schema from a null value, so this is a heuristic: a
    column stops arriving when a row change (r, c, u) clears the value its key had, earlier in the batch or in
    silver, and every row change from there to the end of the batch has it null. Tables without a key are
    not checked (no key, no previous value)."""
    if not columns:
        return {}, set()
    rows = "__op <> 'd'"
    last = ", ".join(
        f"max(CASE WHEN {quote(c)} IS NOT NULL THEN __seq END) AS {quote(f'v{i}')}"
        for i, c in enumerate(columns)
    )
    found = con.execute(f"SELECT max(__seq) AS last, {last} FROM resolved WHERE {rows}").fetchall()[0]
    last_seq, valued = found[0], found[1:]
    arriving = {c for c, seq in zip(columns, valued, strict=True) if seq is not None}
    if last_seq is None or not keys:
        return {}, arriving
    # null in the last row change: a candidate
    candidates = [(c, seq) for c, seq in zip(columns, valued, strict=True) if seq is None or seq < last_seq]
    if not candidates:
        return {}, arriving
    key_list = ", ".join(f"o.{quote(k)}" for k in keys)
    window = f"PARTITION BY {key_list} ORDER BY o.__seq"
    lags = ", ".join(
        f"lag(o.{quote(c)}) OVER ({window}) AS {quote(f'__cdcwh_p{i}')}"
        for i, (c, _) in enumerate(candidates)
    )
    before = [  # the key's value before the change: its previous change in the batch, else silver's
        f"CASE WHEN o.__cdcwh_n > 1 THEN o.{quote(f'__cdcwh_p{i}')} "
        f"ELSE {f's.{quote(c)}' if c in in_silver else 'NULL'} END"  # a column new to silver had none
        for i, (c, _) in enumerate(candidates)
    ]
    cleared = ", ".join(
        f"min(o.__seq) FILTER (WHERE o.__op <> 'd' AND o.{quote(c)} IS NULL AND {before[i]} IS NOT NULL)"
        for i, (c, _) in enumerate(candidates)
    )
    join = (
        f"LEFT JOIN silver.{quote(name)} AS s ON "
        + " AND ".join(f"s.{quote(k)} = o.{quote(k)}" for k in keys)
        if in_silver
        else ""
    )
    found = con.execute(
        f"""SELECT {cleared} FROM (
            SELECT o.*, row_number() OVER ({window}) AS __cdcwh_n, {lags} FROM resolved AS o) AS o {join}"""
    ).fetchall()[0]
    vanished = {
        column: int(at)
        for (column, valued_at), at in zip(candidates, found, strict=True)
        if at is not None and (valued_at is None or valued_at < at)
    }
    return vanished, arriving - vanished.keys()


def _track_columns(
    con: duckdb.DuckDBPyConnection,
    name: str,
    batch_id: int,
    vanished: dict[str, int],
    arriving: set[str],
    new: list[str],
    had: dict[str, bool],
) -> None:
    """Mark the columns that stopped arriving as not maintained (``cdcwh.silver_columns``, a comment on the
    silver column, a warning), and the marked ones that carry a value again as maintained."""
    con.execute(COLUMNS_TABLE)
    upsert = "INSERT OR REPLACE INTO cdcwh.silver_columns VALUES (?, ?, ?, ?, now(), ?)"
    for column in sorted(vanished):
        if had.get(column):
            continue
        hint = f"; new in the same batch: {', '.join(new)} (renamed?)" if new else ""
        detail = (
            f"NULL in every change since one that cleared a value (__seq {vanished[column]}): dropped or "
            f"renamed in the source? Rows not changed since keep their last value{hint}"
        )
        status = f"{NOT_MAINTAINED} since batch {batch_id}"
        con.execute(upsert, [name, column, NOT_MAINTAINED, batch_id, detail])
        con.execute(f"COMMENT ON COLUMN silver.{quote(name)}.{quote(column)} IS '{_literal(status)}'")
        log.warning(
            "silver.%s.%s no longer arrives (batch %d): dropped or renamed in the source?%s Rows not changed "
            "since keep their last value; see docs/operations.md, 'Schema changes (DDL)'",
            name,
            column,
            batch_id,
            f" New in the same batch: {', '.join(new)}." if new else "",
        )
    for column in sorted(arriving):
        if not had.get(column):
            continue
        con.execute(upsert, [name, column, MAINTAINED, batch_id, "a value arrived again"])
        con.execute(f"COMMENT ON COLUMN silver.{quote(name)}.{quote(column)} IS NULL")
        log.info("silver.%s.%s carries values again (batch %d): maintained", name, column, batch_id)


def forget_columns(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop what ``cdcwh.silver_columns`` says about ``silver.<name>`` (its table is being rebuilt: the
    rebuild finds the columns that stopped arriving again)."""
    con.execute(COLUMNS_TABLE)
    con.execute("DELETE FROM cdcwh.silver_columns WHERE table_name = ?", [name])


def _literal(text: str) -> str:
    return text.replace("'", "''")


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
