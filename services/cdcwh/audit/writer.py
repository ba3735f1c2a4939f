"""Writing audit rows to PostgreSQL: batched, idempotent, and never in the way of the pipeline.

``PostgresAuditWriter`` inserts rows with one ``executemany`` per table and ``ON CONFLICT DO NOTHING`` (the
tables' natural keys, ``schema.py``), creating the schema through the ``owner`` connection before its first
write. Errors are raised to the caller, which decides what a failure costs:

- the transform keeps its rows in DuckDB and ships them again on a later batch (``transform.py``): lossless;
- ingest and sink use ``BufferedAuditWriter``: rows wait in memory (at most ``MAX_PENDING`` per table) and
  each later batch tries again; after a failure nothing is attempted for ``audit.retry_s``, so an unreachable
  PostgreSQL costs a batch at most one connect timeout per ``retry_s``. Rows are lost only when the process
  stops while PostgreSQL is unreachable, or when more than ``MAX_PENDING`` pile up (the oldest go first);
  each lost row is counted in ``cdcwh_audit_rows_dropped_total``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cdcwh import metrics
from cdcwh.audit.schema import TABLES, ensure_audit_schema, prune_sql
from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.embedded.postgres import NAME as EMBEDDED_POSTGRES
from cdcwh.embedded.registry import record_path
from cdcwh.errors import CdcwhError

log = logging.getLogger(__name__)

MAX_PENDING: Final = 10_000
Row = Sequence[Any]
# what an audit write can fail with: the server (psycopg), the embedded one not running (CdcwhError), a socket
WRITE_ERRORS: Final = (psycopg.Error, CdcwhError, OSError)
# what a row itself causes: retrying cannot help, the row is found and dropped (PostgresAuditWriter.insert)
ROW_ERRORS: Final = (psycopg.DataError, psycopg.IntegrityError)


def audit_enabled(settings: Settings) -> bool:
    """``audit.enabled``, or when unset: a PostgreSQL is configured, or an embedded one is recorded."""
    if settings.audit.enabled is not None:
        return settings.audit.enabled
    if settings.postgres.dsn_for("audit") is not None:
        return True
    return record_path(settings.run_dir, EMBEDDED_POSTGRES).exists()


def insert_sql(schema: str, table: str) -> sql.Composed:
    columns = TABLES[table]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(schema, table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )


class PostgresAuditWriter:
    """Inserts audit rows; one connection kept open and dropped on any error."""

    def __init__(
        self,
        dsn: Callable[[], str],
        owner_dsn: Callable[[], str],
        schema: str,
        *,
        connect_timeout_s: int = 3,
        statement_timeout_s: float = 10.0,
        service: str = "transform",
    ) -> None:
        self.service = service
        self._dsn = dsn
        self._owner_dsn = owner_dsn
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings, service: str = "transform") -> PostgresAuditWriter:
        return cls(
            lambda: postgres_dsn(settings, "audit"),
            # without an owner DSN (roles per service), the tables init-roles made are checked with the audit
            # role; pruning then fails (the audit role may not delete) and is logged
            lambda: postgres_dsn(settings, "owner" if settings.postgres.has_dsn("owner") else "audit"),
            settings.postgres.audit_schema,
            connect_timeout_s=settings.audit.connect_timeout_s,
            statement_timeout_s=settings.audit.statement_timeout_s,
            service=service,
        )

    def connect(self, dsn: str, *, statements: bool = True) -> psycopg.Connection[Any]:
        """A connection whose lock waits (and, with ``statements``, statements) end after
        ``statement_timeout_s``: an audit write never hangs a service behind a long query."""
        ms = max(int(self.statement_timeout_s * 1000), 1)
        options = conninfo_to_dict(dsn).get("options") or ""
        options = f"{options} -c lock_timeout={ms}".strip()
        if statements:
            options += f" -c statement_timeout={ms}"
        return psycopg.connect(dsn, connect_timeout=self.connect_timeout_s, options=options)

    def _connect(self) -> psycopg.Connection[Any]:
        if not self._ready:
            with self.connect(self._owner_dsn()) as owner:
                ensure_audit_schema(owner, self.schema)
            self._ready = True
        if self._conn is None or self._conn.closed:
            self._conn = self.connect(self._dsn())
        return self._conn

    def write(self, rows: Mapping[str, Sequence[Row]]) -> int:
        """Insert every table's rows in one transaction; the number of rows new to PostgreSQL."""
        return sum(self.insert(rows).values())

    def insert(self, rows: Mapping[str, Sequence[Row]]) -> dict[str, int]:
        """Insert every table's rows in one transaction; the rows new to PostgreSQL per table (the others were
        there already and are skipped by their key). When PostgreSQL refuses a row itself (``DataError``,
        ``IntegrityError``: trying again cannot help), each table's rows are inserted again in halves until
        the refused rows are found; those are dropped, counted in ``cdcwh_audit_rows_dropped_total`` and
        logged. Any other error (connection, timeout, privileges) is raised for the caller to retry."""
        if not any(rows.values()):
            return {}
        try:
            conn = self._connect()
            try:
                inserted: dict[str, int] = {}
                with conn.transaction(), conn.cursor() as cur:
                    for table, values in rows.items():
                        if values:
                            cur.executemany(insert_sql(self.schema, table), values)
                            inserted[table] = max(cur.rowcount, 0)
                return inserted
            except ROW_ERRORS:
                pass  # rolled back; the connection is still usable
            return {
                table: self._isolate(conn, table, list(values)) for table, values in rows.items() if values
            }
        except BaseException:
            self.close()
            raise

    def _isolate(self, conn: psycopg.Connection[Any], table: str, values: list[Row]) -> int:
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(insert_sql(self.schema, table), values)
                return max(cur.rowcount, 0)
        except ROW_ERRORS as exc:
            if len(values) > 1:
                half = len(values) // 2
                return self._isolate(conn, table, values[:half]) + self._isolate(conn, table, values[half:])
            metrics.AUDIT_ROWS_DROPPED.labels(self.service, table).inc()
            log.error("audit: PostgreSQL refused a %s row, dropped (%s): %.300r", table, exc, values[0])
            return 0

    def prune(self, retention_days: int) -> dict[str, int]:
        """Delete the rows past the retention, through the owner connection (the audit role may only insert
        and read: docs/security.md); rows deleted per table."""
        deleted: dict[str, int] = {}
        # no statement timeout: deleting a long retention's rows may take a while (prune_interval_s apart)
        with self.connect(self._owner_dsn(), statements=False) as conn:
            if not self._ready:
                ensure_audit_schema(conn, self.schema)
                self._ready = True
            with conn.transaction():
                for table in TABLES:
                    deleted[table] = conn.execute(prune_sql(self.schema, table), (retention_days,)).rowcount
        return deleted

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class BufferedAuditWriter:
    """For ingest and sink: rows written after the service's own commit, kept in memory while PostgreSQL is
    unreachable (see the module docstring for what can be lost), never raising."""

    def __init__(self, service: str, writer: PostgresAuditWriter, retry_s: float) -> None:
        self.service = service
        self.writer = writer
        self.retry_s = retry_s
        self.pending: dict[str, deque[Row]] = {table: deque() for table in TABLES}
        self._next_try = 0.0

    @classmethod
    def from_settings(cls, service: str, settings: Settings) -> BufferedAuditWriter | None:
        """None when the audit is disabled (``audit.enabled``)."""
        if not audit_enabled(settings):
            return None
        return cls(service, PostgresAuditWriter.from_settings(settings, service), settings.audit.retry_s)

    def record(self, rows: Mapping[str, Sequence[Row]]) -> bool:
        """Queue the rows and write everything pending unless a recent failure says wait; True when nothing
        is left pending. Only rows still pending after a failed write are trimmed to ``MAX_PENDING``."""
        for table, values in rows.items():
            self.pending[table].extend(values)
        if self.flush():
            return True
        self._trim()
        return False

    def record_from(self, build: Callable[[], Mapping[str, Sequence[Row]]]) -> bool:
        """``record(build())``, for the services after their own commit: any exception (building the rows
        included) is logged and counted (``cdcwh_errors_total{kind="audit"}``), never raised: an audit
        problem must not fail the pipeline. False when rows are left pending or could not be built."""
        try:
            return self.record(build())
        except Exception:
            metrics.ERRORS.labels(self.service, "audit").inc()
            log.exception("audit: recording the %s batch failed; the batch itself is committed", self.service)
            return False

    def _trim(self) -> None:
        for table, queue in self.pending.items():
            dropped = len(queue) - MAX_PENDING
            if dropped > 0:
                for _ in range(dropped):
                    queue.popleft()
                metrics.AUDIT_ROWS_DROPPED.labels(self.service, table).inc(dropped)
                log.warning("audit: %d %s rows dropped (more than %d pending)", dropped, table, MAX_PENDING)

    def flush(self) -> bool:
        """Write what is pending, in chunks of at most ``MAX_PENDING`` rows per table; False when rows are
        left pending (a failure now or recently)."""
        while any(self.pending.values()):
            if time.monotonic() < self._next_try:
                return False
            pending = self.pending.items()
            batch = {table: list(itertools.islice(queue, MAX_PENDING)) for table, queue in pending if queue}
            try:
                self.writer.write(batch)
            except WRITE_ERRORS as exc:
                self._next_try = time.monotonic() + self.retry_s
                for table in batch:
                    metrics.AUDIT_WRITE_FAILURES.labels(self.service, table).inc()
                log.warning(
                    "audit: cannot write %d rows to PostgreSQL (%s); kept in memory, retried in %.0fs",
                    sum(map(len, batch.values())),
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    self.retry_s,
                )
                return False
            for table, values in batch.items():
                for _ in values:
                    self.pending[table].popleft()
                metrics.AUDIT_ROWS_WRITTEN.labels(self.service, table).inc(len(values))
        return True

    def close(self) -> None:
        """Last try, then report what is lost."""
        self._next_try = 0.0
        if not self.flush():
            for table, queue in self.pending.items():
                if queue:
                    metrics.AUDIT_ROWS_DROPPED.labels(self.service, table).inc(len(queue))
                    log.warning(
                        "audit: %d %s rows not written (PostgreSQL unreachable at stop)", len(queue), table
                    )
        self.writer.close()
