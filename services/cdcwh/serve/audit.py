"""The access audit: every API request as a row of ``<postgres.audit_schema>.api_access`` (subject, roles,
operation hash, marts read, rows returned, duration, status), never the token. Rows are queued by the
request and written in batches by one task, on the audit DSN (the table is created with the owner DSN); a
failed write is retried, and rows left when the server stops are flushed first."""

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

log = logging.getLogger(__name__)
BATCH = 500
LINGER_S = 0.25


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


class AuditWriter:
    def __init__(self, dsn: str, schema: str, owner_dsn: str | None = None) -> None:
        """``dsn``: the audit role's (INSERT only is enough: an identity column needs no sequence grant);
        ``owner_dsn``: the role that may create the table, when not the same (roles per service)."""
        self.dsn = dsn
        self.owner_dsn = owner_dsn or dsn
        self.schema = schema
        self._queue: asyncio.Queue[Access] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.owner_dsn, autocommit=True) as conn:
            await ensure_table(conn, self.schema)
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    def record(self, access: Access) -> None:
        self._queue.put_nowait(access)

    async def flush(self) -> None:
        """Wait until every row recorded so far is written."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout=10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
                    break
                except psycopg.Error as exc:
                    log.warning("audit rows not written yet (%s); retrying", type(exc).__name__)
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(1.0)
            for _ in batch:
                self._queue.task_done()
