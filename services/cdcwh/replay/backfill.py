"""``cdcwh replay sink``: bulk-load the current gold state into the PostgreSQL marts.

Merges by version, so it can run while the streaming sink runs: every gold row goes through the sink's COPY
staging and version-guarded upsert (a row the streaming sink already made newer is left alone), then rows
that gold no longer has are deleted from Postgres unless they are newer than the gold snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from psycopg import sql

from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.errors import ConfigError
from cdcwh.goldfeed import GoldChange
from cdcwh.models import key_json_sql, load_models, row_json_sql
from cdcwh.pgprivileges import dsn_setting
from cdcwh.sink.postgres import PostgresMartSink
from cdcwh.transform.batch import VERSION
from cdcwh.warehouse import open_warehouse, quote, read_state

CHUNK = 20_000


def backfill(
    settings: Settings, marts: list[str] | None = None, progress: Callable[[str, int], None] | None = None
) -> dict[str, dict[str, int]]:
    """Returns per mart the rows loaded and the stale rows deleted; a mart the transform has not built yet
    (its gold table does not exist) is skipped, with ``{"skipped": 1}``."""
    models = {m.name: m for m in load_models(settings.sql_path / "gold")}
    chosen = marts or sorted(models)
    unknown = [m for m in chosen if m not in models]
    if unknown:
        raise ConfigError(f"unknown mart(s) {', '.join(unknown)}; known: {', '.join(sorted(models))}")
    sink = PostgresMartSink(
        postgres_dsn(settings, "sink"),
        settings.postgres.schema_,
        settings.sql_path,
        settings.contracts_path,
        owner_dsn=postgres_dsn(settings, "owner"),
        setting=dsn_setting(settings, "sink"),
        owner_setting=dsn_setting(settings, "owner"),
    )
    con = open_warehouse(settings, read_only=True)
    summary: dict[str, dict[str, int]] = {}
    try:
        built = {
            str(name)
            for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'gold'"
            ).fetchall()
        }
        # rows Postgres holds at or below the warehouse's newest version and gold lacks are deleted: the
        # newest version the file gave out, not the newest among a mart's rows (0 for an empty mart). Read
        # before the marts' cursors: another query on the connection would end an open cursor's results
        newest = read_state(con, VERSION) or 0
        for mart in chosen:
            if mart not in built:
                summary[mart] = {"skipped": 1}
                continue
            model = models[mart]
            described = [
                (str(n), str(t))
                for n, t in con.execute(
                    f"SELECT column_name, column_type FROM (DESCRIBE gold.{quote(mart)})"
                ).fetchall()
                if n not in ("_version", "_updated_at")
            ]
            cursor = con.execute(
                f"SELECT {key_json_sql(model.primary_key)}, _version, {row_json_sql(described)} "
                f"FROM gold.{quote(mart)}"
            )
            loaded, snapshot_version = 0, newest
            keys: list[tuple[object, ...]] = []
            while batch := cursor.fetchmany(CHUNK):
                changes = []
                for key, version, row in batch:
                    data = json.loads(row)
                    changes.append(GoldChange(mart, "upsert", int(version), str(key), data, None))
                    keys.append(tuple(data[k] for k in model.primary_key))
                    snapshot_version = max(snapshot_version, int(version))
                sink.apply(changes, repair=True)  # also restores a same-version row altered by hand
                loaded += len(changes)
                if progress is not None:
                    progress(mart, len(changes))
            deleted = delete_missing(sink, mart, list(model.primary_key), keys, snapshot_version)
            summary[mart] = {"loaded": loaded, "deleted": deleted}
    finally:
        con.close()
        sink.close()
    return summary


def delete_missing(
    sink: PostgresMartSink, mart: str, primary_key: list[str], keys: list[tuple[object, ...]], version: int
) -> int:
    """Delete Postgres rows whose key gold does not have, unless newer than the gold snapshot."""
    conn = sink.connect()
    target = sql.Identifier(sink.schema, mart)
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TEMP TABLE backfill_keys ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(", ").join(map(sql.Identifier, primary_key)), target
            )
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY backfill_keys ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, primary_key))
                )
            ) as copy,
        ):
            for key in keys:
                copy.write_row(key)
        match = sql.SQL(" AND ").join(
            sql.SQL("k.{c} = m.{c}").format(c=sql.Identifier(c)) for c in primary_key
        )
        deleted = conn.execute(
            sql.SQL(
                "DELETE FROM {} AS m WHERE m._version <= %s "
                "AND NOT EXISTS (SELECT 1 FROM backfill_keys k WHERE {})"
            ).format(target, match),
            (version,),
        ).rowcount
    conn.commit()
    return deleted
