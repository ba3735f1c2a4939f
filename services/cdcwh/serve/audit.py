"""The access audit: every API request as a row of ``<postgres.audit_schema>.api_access`` (subject, roles,
operation hash, marts read, rows returned, duration, status), never the token. Rows are queued by the
request and written in batches by one task, on the audit DSN (the table is created with the owner DSN when
it does not exist yet). A write failing for want of a connection is retried with the same batch; any other
failure (a value PostgreSQL refuses, a missing privilege) is logged and the batch dropped, counted in
``cdcwh_audit_rows_dropped_total``, as are rows beyond ``MAX_PENDING`` waiting and rows still unwritten
``CLOSE_TIMEOUT_S`` after the server is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from cdcwh.audit.api_access import TABLE, ensure_table
from cdcwh.errors import ConfigError
from cdcwh.metrics import AUDIT_ROWS_DROPPED, AUDIT_ROWS_WRITTEN, AUDIT_WRITE_FAILURES
from cdcwh.pgprivileges import require_privileges, table_needs

log = logging.getLogger(__name__)
BATCH = 500
LINGER_S = 0.25
MAX_PENDING = 50_000
CLOSE_TIMEOUT_S = 10.0
RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5
SERVICE = "serve"


@dataclass
class Access:
    """One request; the handler fills it in as it goes."""

    operation: str  # query / subscription
    subject: str | None = None
    roles: tuple[str, ...] = ()
    operation_hash: str | None = None
    marts: set[str] = field(default_factory=set)
    rows: int = 0
    status: str = "ok"
    error: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0

    def values(self) -> tuple[Any, ...]:
        return (
            self.started,
            self.subject,
            list(self.roles),
            self.operation,
            self.operation_hash,
            sorted(self.marts),
            self.rows,
            self.duration_s * 1000,
            self.status,
            self.error,
        )


COLUMNS = (
    "at",
    "subject",
    "roles",
    "operation",
    "operation_hash",
    "marts",
    "rows_returned",
    "duration_ms",
    "status",
    "error",
)


def _dropped(rows: int, why: str) -> None:
    AUDIT_ROWS_DROPPED.labels(SERVICE, TABLE).inc(rows)
    log.error("%d access audit rows dropped: %s", rows, why)


class AuditWriter:
    def __init__(
        self,
        dsn: str,
        schema: str,
        owner_dsn: str | None = None,
        *,
        max_pending: int = MAX_PENDING,
        setting: str = "postgres.audit_dsn",
    ) -> None:
        """``dsn``: the audit role's (INSERT only is enough: an identity column needs no sequence grant);
        ``owner_dsn``: the role that may create the table, when it does not exist yet (None: try ``dsn``)."""
        self.dsn = dsn
        self.owner_dsn = owner_dsn or dsn
        self.schema = schema
        self.setting = setting
        self._queue: asyncio.Queue[Access] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create the table when missing; fail fast, naming the setting, when it cannot be written."""
        try:
            async with await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn:
                cursor = await conn.execute(
                    "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (self.schema, TABLE)
                )
                exists = (await cursor.fetchone() or (None,))[0] is not None
            if not exists:
                async with await psycopg.AsyncConnection.connect(self.owner_dsn, autocommit=True) as conn:
                    await ensure_table(conn, self.schema)
            await asyncio.to_thread(self._check)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cdcwh serve: cannot connect to PostgreSQL with {self.setting}: {exc}"
            ) from None
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._task.add_done_callback(_ended)

    def _check(self) -> None:
        with psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            needs = table_needs(self.schema, [TABLE], ["INSERT"])
            require_privileges(conn, needs, service="cdcwh serve (access audit)", setting=self.setting)

    def record(self, access: Access) -> None:
        try:
            self._queue.put_nowait(access)
        except asyncio.QueueFull:
            _dropped(1, f"more than {self._queue.maxsize} waiting to be written")

    async def flush(self) -> None:
        """Wait until every row recorded so far is written (or dropped)."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout=CLOSE_TIMEOUT_S)
            self._task.remove_done_callback(_ended)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if self._queue.qsize():
                _dropped(self._queue.qsize(), "PostgreSQL not reachable when the server stopped")

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(self.schema, TABLE),
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        )
        while True:
            batch = [await self._queue.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_S):
                    while len(batch) < BATCH:
                        batch.append(await self._queue.get())
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(self.dsn)
                    async with conn.cursor() as cur:
                        await cur.executemany(insert, [a.values() for a in batch])
                    await conn.commit()
                    AUDIT_ROWS_WRITTEN.labels(SERVICE, TABLE).inc(len(batch))
                    break
                except psycopg.OperationalError as exc:  # no connection: the same batch again
                    AUDIT_WRITE_FAILURES.labels(SERVICE, TABLE).inc()
                    log.warning("audit rows not written yet (%s); retrying", type(exc).__name__)
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(RETRY_S)
                except (psycopg.Error, ValueError) as exc:  # refused: retrying would refuse it again
                    AUDIT_WRITE_FAILURES.labels(SERVICE, TABLE).inc()
                    _dropped(len(batch), f"PostgreSQL refused them ({type(exc).__name__}: {exc})")
                    if conn is not None and not conn.closed:
                        await conn.rollback()
                    break
            for _ in batch:
                self._queue.task_done()


def _ended(task: asyncio.Task[None]) -> None:
    """The writer should only end when closed; say so loudly if it died."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the access audit writer died; no more audit rows", exc_info=task.exception())
