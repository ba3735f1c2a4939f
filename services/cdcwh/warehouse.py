"""The DuckDB warehouse file: silver, silver_history, gold, and cdcwh's own bookkeeping schema.

The transform service opens it read-write and closes it when a batch finds nothing new or after at most
``CDCWH_TRANSFORM__HOLD_S`` of busy batches, so ``cdcwh query`` (read-only, waiting for the lock) gets in.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdcwh import faults
from cdcwh.config import Settings
from cdcwh.core.identifiers import quote as quote  # re-exported: the service packages quote through here
from cdcwh.errors import InfrastructureError

log = logging.getLogger(__name__)

SCHEMAS = ("silver", "silver_history", "gold", "cdcwh")
# cdcwh.state mark of a silver table whose slice failed: ``silver_failed:<table>`` = the first batch it
# failed. Its watermarks stay; every later batch that runs (with other work, or a process's first) retries it
SILVER_FAILED = "silver_failed:"


@dataclass
class ChangeSet:
    """What one batch changed, for the incremental gold models: the tables whose changed rows (their images
    before and after the batch) are in ``changes_table(schema, name)``, and the tables changed in a way only a
    full recompute follows (a truncate, a table without a key)."""

    captured: set[tuple[str, str]] = field(default_factory=set)
    full: set[tuple[str, str]] = field(default_factory=set)


def changes_table(schema: str, name: str) -> str:
    """The temporary table of the batch's changed rows of ``<schema>.<name>`` (both images)."""
    return quote(f"changes__{schema}__{name}")


BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS cdcwh.watermarks (
    topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, "offset" BIGINT NOT NULL,
    PRIMARY KEY (topic, "partition"));
CREATE TABLE IF NOT EXISTS cdcwh.state (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS cdcwh.silver_tables (
    name VARCHAR PRIMARY KEY, topic VARCHAR NOT NULL, key_columns VARCHAR[] NOT NULL);
-- the changes silver applied per table and minute of source commit time (count_volume)
CREATE TABLE IF NOT EXISTS cdcwh.volume_minutes (
    table_name VARCHAR NOT NULL, minute BIGINT NOT NULL, changes BIGINT NOT NULL,
    PRIMARY KEY (table_name, minute));
CREATE SEQUENCE IF NOT EXISTS cdcwh.outbox_id;
CREATE TABLE IF NOT EXISTS cdcwh.outbox (
    id BIGINT PRIMARY KEY DEFAULT nextval('cdcwh.outbox_id'), version BIGINT NOT NULL, mart VARCHAR NOT NULL,
    key VARCHAR NOT NULL, op VARCHAR NOT NULL, "row" VARCHAR, source_ts TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS cdcwh.batches (
    batch_id BIGINT PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ,
    status VARCHAR NOT NULL, error VARCHAR, bronze_rows BIGINT, gold_changes BIGINT, version BIGINT);
CREATE TABLE IF NOT EXISTS cdcwh.batch_models (
    batch_id BIGINT NOT NULL, model VARCHAR NOT NULL, rows_in BIGINT NOT NULL, rows_out BIGINT NOT NULL,
    status VARCHAR DEFAULT 'ok', error VARCHAR);
-- warehouse files made before a gold model could fail on its own: their rows were all ok
ALTER TABLE cdcwh.batch_models ADD COLUMN IF NOT EXISTS status VARCHAR DEFAULT 'ok';
ALTER TABLE cdcwh.batch_models ADD COLUMN IF NOT EXISTS error VARCHAR;
-- and before a batch's version (the marts' _version) was other than its id: their rows have none
ALTER TABLE cdcwh.batches ADD COLUMN IF NOT EXISTS version BIGINT;
"""


def warehouse_path(settings: Settings) -> Path:
    return settings.data_dir / "warehouse.duckdb"


def open_warehouse(
    settings: Settings, *, read_only: bool = False, wait_s: float = 30.0
) -> duckdb.DuckDBPyConnection:
    """Connect to the warehouse file, waiting up to ``wait_s`` while another process holds its lock."""
    path = warehouse_path(settings)
    if read_only and not path.exists():
        raise InfrastructureError(f"no warehouse at {path} yet: run `cdcwh transform` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not read_only:
        _create_whole(path)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise InfrastructureError(f"cannot open the warehouse {path}: {exc}") from exc
            time.sleep(0.1)
    con.execute("SET TimeZone = 'UTC'")
    if not read_only:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(BOOKKEEPING)
    return con


def _create_whole(path: Path) -> None:
    """Make sure ``path`` holds a whole DuckDB file before DuckDB opens it read-write.

    DuckDB creates a new file in place, and a process killed in its first moments (a SIGKILL while the
    transform starts) left a file of zero bytes that DuckDB then refused for good ("not a valid DuckDB
    database file"): every restart failed. So a new warehouse is made as ``.<name>.creating``, closed (its
    headers written) and linked into place; and a zero-byte file at the path, which no DuckDB ever committed
    anything to, is what an earlier release's interrupted creation left, and is made anew. Creators take
    turns under a lock on ``.<name>.lock`` (released by the kernel when its holder dies), so whatever a
    creator finds besides the path itself is a dead one's leftover."""
    if path.exists() and path.stat().st_size > 0:
        return
    making = path.with_name(f".{path.name}.creating")
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            if path.stat().st_size > 0 or Path(f"{path}.wal").exists():
                return  # another creator made it while this one waited
            log.warning("the warehouse %s is an empty file (an interrupted creation): making it anew", path)
            path.unlink()
        for leftover in (making, Path(f"{making}.wal")):
            leftover.unlink(missing_ok=True)
        try:
            duckdb.connect(str(making)).close()
        except duckdb.Error as exc:
            raise InfrastructureError(f"cannot create the warehouse {path}: {exc}") from exc
        faults.hit(faults.WAREHOUSE_CREATED, path.parent)
        try:
            os.link(making, path)
        except OSError:  # a file system without hard links; under the lock, nobody else makes the path
            os.replace(making, path)
        faults.hit(faults.WAREHOUSE_LINKED, path.parent)
        making.unlink(missing_ok=True)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> object | None:
    """The first column of the first row, or None; consumes the whole result (DuckDB 2 requires it before
    the connection runs anything else)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def count(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> int:
    value = scalar(con, sql, params)
    return int(value) if isinstance(value, int) else 0


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    # duckdb_tables(), not information_schema: half the cost, and this runs for every table each batch
    return bool(
        count(
            con,
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
            [schema, name],
        )
    )


VOLUME_OPS = ("c", "u", "d")
"""The operations that count as changes in ``cdcwh.volume_minutes`` (snapshot reads and truncates do not)."""


def count_volume(con: duckdb.DuckDBPyConnection, table: str, relation: str) -> None:
    """Add the changes in ``relation`` (silver history rows: ``__op``, ``__source_ts``) to ``table``'s counts
    per minute of source commit time (minutes since the epoch, UTC) in ``cdcwh.volume_minutes``. Called in
    the batch's transaction with the changes it applied: a batch rolled back counts nothing, one redone
    counts once, and a redelivery silver drops never counts."""
    con.execute(
        f"""INSERT INTO cdcwh.volume_minutes
        SELECT ?, epoch_ms(__source_ts) // 60000, count(*) FROM {relation}
        WHERE list_contains(?, __op) AND __source_ts IS NOT NULL GROUP BY 2
        ON CONFLICT DO UPDATE SET changes = changes + excluded.changes""",  # noqa: S608 - a relation
        [table, list(VOLUME_OPS)],
    )


def read_state(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """A counter or flag of ``cdcwh.state``; None when it was never written."""
    value = scalar(con, "SELECT value FROM cdcwh.state WHERE name = ?", [name])
    return int(value) if isinstance(value, int) else None


def write_state(con: duckdb.DuckDBPyConnection, name: str, value: int) -> None:
    con.execute("INSERT OR REPLACE INTO cdcwh.state VALUES (?, ?)", [name, value])


# rows per INSERT statement of ``insert_rows``: a bound on the statement's size (its parameters)
ROWS_PER_INSERT = 500


def insert_rows(con: duckdb.DuckDBPyConnection, insert: str, rows: Sequence[Sequence[object]]) -> None:
    """``insert`` (``INSERT ... INTO t [(columns)]``, up to ``VALUES``) for every row, a few hundred rows per
    statement. DuckDB's ``executemany`` executes its statement once per row, about 5 ms each into a table
    with a primary key: a transform batch recording a hundred test results spent half a second on it.
    Unlike ``executemany``, ``INSERT OR REPLACE`` keeps the first of two rows with one key in a statement:
    callers pass distinct keys."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        width = len(chunk[0])
        placeholders = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(chunk))
        con.execute(f"{insert} VALUES {placeholders}", [value for row in chunk for value in row])
