"""``PostgresMartSink``: applies batches of gold changes to the mart tables, guarded by version.

Per batch, in one transaction, per mart:

1. keep the newest change per key (highest ``version``);
2. deletes: record ``(mart, key, version)`` in ``<schema>._tombstones`` (keeping the newest) and delete the
   row only if its ``_version`` is older;
3. for a single integer key, upserts whose key is above the mart's largest are new rows (minus those a
   tombstone at least as new deleted): COPied straight into the mart, as fast as a plain COPY. If another
   writer inserted one of those keys meanwhile, the COPY fails inside a savepoint and they take step 4;
4. the other upserts are COPied into a temporary staging table shaped like the mart, then
   ``INSERT ... SELECT`` from it ``ON CONFLICT (pk) DO UPDATE ... WHERE mart._version < excluded._version``,
   skipping keys whose tombstone is at least as new.

So replaying old changes never regresses a row, and a replayed upsert older than a delete does not bring the
row back. The caller commits the Kafka offsets only after this transaction commits.

Each mart's part of the batch runs in a savepoint. When PostgreSQL rejects the data (a constraint violation,
a value out of range, a NUL byte in a text: ``DATA_ERRORS``), the part is rolled back to its savepoint and
bisected, each half in its own savepoint, down to the single changes PostgreSQL refuses. Those are recorded in
``<schema>._dead_letters`` and the rest of the batch applies. Any other error (connection lost: ``psycopg.
OperationalError``) rolls the whole transaction back, dead letters included: nothing partial lands.

At connect the mart tables are created from the gold models, or checked and their narrower columns widened
(``ddl.py``), through the owner's DSN when the sink has one of its own (roles per service: docs/security.md);
then the sink's role is checked for what it does to every table (SELECT, INSERT, UPDATE, DELETE, and TEMPORARY
on the database for the staging tables): a missing right stops it at start, naming the role, the privilege and
the table (``cdcwh.pgprivileges``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cdcwh import martnotify
from cdcwh.goldfeed import GoldChange
from cdcwh.models import DerivedMarts, derive_marts, load_models
from cdcwh.pgprivileges import Need, require_privileges, table_needs
from cdcwh.sink.ddl import DEAD_LETTERS, SINK_TABLES, TOMBSTONES, ensure_marts

log = logging.getLogger(__name__)

WRITES = ("SELECT", "INSERT", "UPDATE", "DELETE")
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
# Errors about the rows themselves: a part of a batch failing with one is narrowed to the changes at fault,
# which become dead letters. psycopg raises DataError itself for a NUL byte in a text (PostgreSQL text cannot
# hold one), and a lone surrogate in a string fails to encode. Everything else (OperationalError: the
# connection, the server) fails the whole batch, which the service retries.
DATA_ERRORS: tuple[type[Exception], ...] = (psycopg.DataError, psycopg.IntegrityError, UnicodeEncodeError)


@dataclass(frozen=True)
class DeadLetter:
    """A change PostgreSQL refused, recorded in ``<schema>._dead_letters``."""

    mart: str
    key: str
    version: int
    op: str
    reason: str
    sqlstate: str | None
    error: str


@dataclass
class ApplyResult:
    upserts: dict[str, int]
    deletes: dict[str, int]
    dead_letters: list[DeadLetter] = field(default_factory=list)


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def dead_letter_reason(exc: BaseException) -> tuple[str, str | None]:
    """A bounded ``reason``: the error class in snake case (``check_violation``,
    ``numeric_value_out_of_range``), or ``nul_in_text`` for the NUL byte psycopg refuses to send; and the
    SQLSTATE, when PostgreSQL raised the error."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None and isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
        return "nul_in_text", None
    return snake_case(type(exc).__name__), sqlstate


def printable(text: str) -> str:
    """``text`` storable in a PostgreSQL text column, which refuses NUL bytes and lone surrogates."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


class PostgresMartSink:
    def __init__(
        self,
        dsn: str,
        schema: str,
        sql_dir: Path,
        contracts_dir: Path | None = None,
        *,
        owner_dsn: str | None = None,
        setting: str = "postgres.sink_dsn",
        owner_setting: str = "postgres.owner_dsn",
    ) -> None:
        """``contracts_dir``: the table contracts the mart column types are derived from (default: the
        project's ``schemas/contracts``). ``owner_dsn``: the DSN the DDL runs with, when not ``dsn``'s own
        role; ``setting``/``owner_setting``: the settings named when a role lacks a privilege."""
        self.dsn = dsn
        self.owner_dsn = owner_dsn if owner_dsn != dsn else None
        self.setting = setting
        self.owner_setting = owner_setting
        self.schema = schema
        self.sql_dir = sql_dir
        self.contracts_dir = contracts_dir or sql_dir.parent / "schemas" / "contracts"
        self._conn: psycopg.Connection[Any] | None = None
        self._columns: dict[str, list[str]] = {}
        self._types: dict[str, dict[str, str]] = {}
        self._keys: dict[str, list[str]] = {}
        self._derived: DerivedMarts | None = None
        self._dead_marts: set[str] = set()  # marts with dead letters: applied keys clear theirs
        self._staged: set[str] = set()  # marts whose staging table got rows in the current transaction

    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=False)
            try:
                self._ensure_schema(self._conn)
            except BaseException:  # a mart table that does not fit its model: no half-set-up connection
                self.close()
                raise
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._derived is None:  # the mart tables follow the gold models (sink/ddl.py)
            self._derived = derive_marts(load_models(self.sql_dir / "gold"), self.contracts_dir)
        derived = self._derived
        if self.owner_dsn is None:
            self._run_ddl(conn, self.setting)
        else:
            with psycopg.connect(self.owner_dsn, autocommit=False) as owner:
                self._run_ddl(owner, self.owner_setting)
        needs = [
            Need("database", "TEMPORARY"),
            *table_needs(self.schema, sorted({*derived.tables, *derived.failures, *SINK_TABLES}), WRITES),
        ]
        require_privileges(conn, needs, service="sink", setting=self.setting)
        conn.commit()
        self._load_layout(conn)

    def _run_ddl(self, conn: psycopg.Connection[Any], setting: str) -> None:
        derived = self._derived or derive_marts(load_models(self.sql_dir / "gold"), self.contracts_dir)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdcwh-mart-ddl'))")
            ensure_marts(conn, self.schema, derived, setting=setting)
        conn.commit()

    def _load_layout(self, conn: psycopg.Connection[Any]) -> None:
        """The columns, their types and the primary keys of the schema's tables, and the marts with dead
        letters (committed on return)."""
        rows = conn.execute(
            """SELECT c.table_name, c.column_name, format_type(a.atttypid, a.atttypmod)
            FROM information_schema.columns c
            JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', c.table_schema, c.table_name)::regclass
              AND a.attname = c.column_name
            WHERE c.table_schema = %s ORDER BY c.table_name, c.ordinal_position""",
            (self.schema,),
        ).fetchall()
        self._columns, self._types = {}, {}
        for table, column, type_ in rows:
            self._columns.setdefault(table, []).append(column)
            self._types.setdefault(table, {})[column] = type_
        keys = conn.execute(
            """SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu
              ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema
            WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY'
            ORDER BY tc.table_name, kcu.ordinal_position""",
            (self.schema,),
        ).fetchall()
        self._keys = {}
        for table, column in keys:
            self._keys.setdefault(table, []).append(column)
        dead = conn.execute(
            sql.SQL("SELECT DISTINCT mart FROM {}").format(sql.Identifier(self.schema, DEAD_LETTERS))
        ).fetchall()
        self._dead_marts = {str(mart) for (mart,) in dead}
        conn.commit()

    def apply(self, changes: Iterable[GoldChange], *, repair: bool = False) -> ApplyResult:
        """Apply the changes in one transaction (committed on return).

        ``repair`` (the batch backfill): an upsert also overwrites a row of the *same* version, whose content
        must then be the same; so a row altered by hand in Postgres is restored. Newer rows stay untouched."""
        newest: dict[tuple[str, str], GoldChange] = {}
        for change in changes:
            current = newest.get((change.mart, change.key))
            if current is None or change.version >= current.version:
                newest[(change.mart, change.key)] = change
        by_mart: dict[str, list[GoldChange]] = {}
        for change in newest.values():
            by_mart.setdefault(change.mart, []).append(change)
        conn = self.connect()
        if by_mart.keys() - self._columns.keys():  # a model added since the start: create its table
            self._derived = None
            self._ensure_schema(conn)
        result = ApplyResult(upserts={}, deletes={})
        self._staged = set()
        with conn.transaction():
            for mart, mart_changes in sorted(by_mart.items()):
                if mart not in self._columns:
                    raise psycopg.ProgrammingError(f"no table {self.schema}.{mart} for gold mart {mart}")
                dead: list[DeadLetter] = []
                self._apply_narrowing(conn, mart, mart_changes, dead, repair=repair)
                refused = {(d.key, d.op) for d in dead}
                for op, counts in (("upsert", result.upserts), ("delete", result.deletes)):
                    counts[mart] = sum(1 for c in mart_changes if c.op == op and (c.key, op) not in refused)
                result.dead_letters.extend(dead)
            if by_mart:  # delivered at commit only: listeners (cdcwh serve) never see a half-applied batch
                versions = {mart: max(c.version for c in cs) for mart, cs in by_mart.items()}
                conn.execute(
                    "SELECT pg_notify(%s, %s)", (martnotify.channel(self.schema), martnotify.encode(versions))
                )
        conn.commit()
        return result

    def _apply_narrowing(
        self,
        conn: psycopg.Connection[Any],
        mart: str,
        changes: list[GoldChange],
        dead: list[DeadLetter],
        *,
        repair: bool,
    ) -> None:
        """Apply ``changes`` (one mart, one change per key) in a savepoint; when PostgreSQL refuses the data,
        roll back to it and bisect, down to the single changes it refuses, which become dead letters."""
        try:
            with conn.transaction():
                self._apply_mart(conn, mart, changes, repair=repair)
        except DATA_ERRORS as exc:
            if len(changes) == 1:
                dead.append(self._dead_letter(conn, changes[0], exc))
                return
            half = len(changes) // 2
            self._apply_narrowing(conn, mart, changes[:half], dead, repair=repair)
            self._apply_narrowing(conn, mart, changes[half:], dead, repair=repair)

    def _apply_mart(
        self, conn: psycopg.Connection[Any], mart: str, changes: list[GoldChange], *, repair: bool
    ) -> None:
        upserts = [c for c in changes if c.op == "upsert"]
        deletes = [c for c in changes if c.op == "delete"]
        if deletes:
            self._delete(conn, mart, deletes)
        if upserts:
            self._upsert(conn, mart, upserts, repair=repair)
        if mart in self._dead_marts:  # a key applied at a version at least as new: its dead letter is moot
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} AS d USING unnest(%s::text[], %s::bigint[]) AS a(key, version) "
                    "WHERE d.mart = %s AND d.key = a.key AND d.version <= a.version"
                ).format(sql.Identifier(self.schema, DEAD_LETTERS)),
                ([printable(c.key) for c in changes], [c.version for c in changes], mart),
            )

    def _dead_letter(
        self, conn: psycopg.Connection[Any], change: GoldChange, exc: BaseException
    ) -> DeadLetter:
        """Record a refused change (once per (mart, key, version): a replay of it counts an attempt)."""
        reason, sqlstate = dead_letter_reason(exc)
        letter = DeadLetter(
            mart=change.mart,
            key=printable(change.key),
            version=change.version,
            op=change.op,
            reason=reason,
            sqlstate=sqlstate,
            error=printable(str(exc)),
        )
        # the change as the gold message carried it; JSON escapes a NUL byte, which text and jsonb refuse raw
        payload = json.dumps(
            {"mart": change.mart, "op": change.op, "version": change.version, "row": change.row}
        )
        conn.execute(
            sql.SQL(
                """INSERT INTO {} AS d (mart, key, version, op, change, reason, sqlstate, error)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (mart, key, version) DO UPDATE SET op = EXCLUDED.op, change = EXCLUDED.change,
                    reason = EXCLUDED.reason, sqlstate = EXCLUDED.sqlstate, error = EXCLUDED.error,
                    last_seen = now(), attempts = d.attempts + 1"""
            ).format(sql.Identifier(self.schema, DEAD_LETTERS)),
            (letter.mart, letter.key, letter.version, letter.op, payload, reason, sqlstate, letter.error),
        )
        self._dead_marts.add(change.mart)
        return letter

    def _upsert(
        self, conn: psycopg.Connection[Any], mart: str, changes: list[GoldChange], *, repair: bool = False
    ) -> None:
        new, others = self._split(conn, mart, changes)
        if new:
            try:
                with conn.transaction():  # a savepoint: a key inserted meanwhile fails this part only
                    self._copy_rows(conn, sql.Identifier(self.schema, mart), mart, new)
            except psycopg.errors.UniqueViolation:
                others.extend(new)
        if others:
            self._merge(conn, mart, others, repair=repair)

    def _split(
        self, conn: psycopg.Connection[Any], mart: str, changes: list[GoldChange]
    ) -> tuple[list[GoldChange], list[GoldChange]]:
        """The upserts that are new rows for sure, and the others (for the guarded merge).

        Only for a mart with a single integer key: a key above the mart's largest is new (a new row of a
        serial key, the usual insert), unless a tombstone at least as new says it was deleted (then it is
        dropped). Probing every key instead cost more than it saved when most rows already exist."""
        keys = self._keys[mart]
        if len(keys) != 1 or self._types[mart][keys[0]] not in INTEGER_TYPES:
            return [], list(changes)
        column = keys[0]
        row = conn.execute(
            sql.SQL("SELECT max({}) FROM {}").format(
                sql.Identifier(column), sql.Identifier(self.schema, mart)
            )
        ).fetchone()
        largest = row[0] if row else None
        new: list[GoldChange] = []
        others: list[GoldChange] = []
        for change in changes:
            value = (change.row or {}).get(column)
            if value is None:
                value = json.loads(change.key).get(column)
            fresh = (
                isinstance(value, int)
                and not isinstance(value, bool)
                and (largest is None or value > largest)
            )
            (new if fresh else others).append(change)
        tombstones = sql.Identifier(self.schema, TOMBSTONES)
        if new and conn.execute(
            sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE mart = %s)").format(tombstones), (mart,)
        ).fetchone() == (True,):
            deleted = dict(
                conn.execute(
                    sql.SQL("SELECT key, _version FROM {} WHERE mart = %s AND key = ANY(%s::text[])").format(
                        tombstones
                    ),
                    (mart, [c.key for c in new]),
                ).fetchall()
            )
            new = [c for c in new if deleted.get(c.key, -1) < c.version]
        return new, others

    def _copy_rows(
        self,
        conn: psycopg.Connection[Any],
        target: sql.Composable,
        mart: str,
        changes: list[GoldChange],
        *,
        with_key: bool = False,
    ) -> None:
        data = [c for c in self._columns[mart] if c not in ("_version", "_updated_at")]
        copy_columns = [*data, "_version", "_updated_at", *(["_key"] if with_key else [])]
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            target, sql.SQL(", ").join(map(sql.Identifier, copy_columns))
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for change in changes:
                row = change.row or {}
                values = [*(row.get(c) for c in data), change.version, "now"]
                if with_key:
                    values.append(change.key)
                copy.write_row(values)

    def _merge(
        self, conn: psycopg.Connection[Any], mart: str, changes: list[GoldChange], *, repair: bool = False
    ) -> None:
        """Upsert through a staging table, each row guarded by the mart's version and the tombstones."""
        columns = self._columns[mart]
        keys = self._keys[mart]
        target = sql.Identifier(self.schema, mart)
        stage = sql.Identifier(f"stage_{mart}")
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS, _key text) "
                "ON COMMIT DELETE ROWS"
            ).format(stage, target)
        )
        if (
            mart in self._staged
        ):  # a second part of the batch (a narrowed one): not the first part's rows again
            conn.execute(sql.SQL("DELETE FROM {}").format(stage))
        self._staged.add(mart)
        self._copy_rows(conn, stage, mart, changes, with_key=True)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns
            if c not in keys
        )
        conn.execute(
            sql.SQL(
                """INSERT INTO {target} ({cols})
                SELECT {scols} FROM {stage} s
                LEFT JOIN {tombstones} t ON t.mart = %s AND t.key = s._key
                WHERE t._version IS NULL OR t._version < s._version
                ON CONFLICT ({keys}) DO UPDATE SET {assignments}
                WHERE {target_name}._version {guard} EXCLUDED._version"""
            ).format(
                target=target,
                cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                scols=sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
                stage=stage,
                tombstones=sql.Identifier(self.schema, TOMBSTONES),
                keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
                assignments=assignments,
                target_name=sql.Identifier(mart),
                guard=sql.SQL("<=" if repair else "<"),
            ),
            (mart,),
        )

    def _delete(self, conn: psycopg.Connection[Any], mart: str, changes: list[GoldChange]) -> None:
        keys = self._keys[mart]
        tombstones = sql.Identifier(self.schema, TOMBSTONES)
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    """INSERT INTO {} (mart, key, _version) VALUES (%s, %s, %s)
                    ON CONFLICT (mart, key) DO UPDATE SET _version = EXCLUDED._version
                    WHERE {}._version < EXCLUDED._version"""
                ).format(tombstones, sql.Identifier(TOMBSTONES)),
                [(mart, c.key, c.version) for c in changes],
            )
            for change in changes:
                key = json.loads(change.key)
                condition = sql.SQL(" AND ").join(
                    sql.SQL("{} IS NOT DISTINCT FROM %s").format(sql.Identifier(k)) for k in keys
                )
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE {} AND _version < %s").format(
                        sql.Identifier(self.schema, mart), condition
                    ),
                    [*(key.get(k) for k in keys), change.version],
                )
