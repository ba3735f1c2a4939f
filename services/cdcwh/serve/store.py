"""The API's side of PostgreSQL: a pool of read-only connections (the reader DSN), the cache, and the
listener of mart announcements (``cdcwh.martnotify``) that drops cached answers and wakes subscriptions.

The cache is used only while the listener is connected (its connection has TCP keepalives and is pinged
every ``PING_S`` seconds without a notification, so a dead or half-open one is found and replaced): an
announcement missed while it was not is never the reason for a stale answer. Writes to the marts that do not
go through the sink are not announced: answers cached before them stay until the mart's next announcement
(``serve.cache_size = 0`` when something else writes the marts)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from cdcwh import martnotify
from cdcwh.config import ServeSettings
from cdcwh.errors import ConfigError
from cdcwh.metrics import API_ANNOUNCEMENTS, API_CACHE
from cdcwh.pgprivileges import require_privileges, table_needs
from cdcwh.serve.cache import ResultCache
from cdcwh.serve.compile import Compiled, QueryError
from cdcwh.serve.model import SemanticModel
from cdcwh.serve.rows import paging

log = logging.getLogger(__name__)
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
PING_S = 10.0
CONNECT_TIMEOUT_S = 5
COLUMNS_SQL = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
)
# each valid, non-partial unique index (the primary key too) on plain NOT NULL columns: its table, its key
# columns (not the INCLUDE ones, which the uniqueness does not cover)
UNIQUE_SQL = """
SELECT c.relname, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE n.nspname = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, c.relname
HAVING bool_and(k.attnum > 0 AND a.attnotnull)
"""


@dataclass(frozen=True)
class Answer:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    marts: frozenset[str]
    has_more: bool
    cached: bool = False


def plain(value: Any) -> Any:
    """A JSON value: exact decimals as text (whole ones, such as a sum of integers, as numbers), dates and
    times in ISO 8601."""
    if isinstance(value, Decimal):
        if value.as_tuple().exponent == 0 and abs(value) < 2**53:
            return int(value)
        return str(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return value


class Warehouse:
    def __init__(
        self,
        dsn: str,
        schema: str,
        settings: ServeSettings,
        marts: frozenset[str] | None = None,
        setting: str = "postgres.reader_dsn",
        model: SemanticModel | None = None,
    ) -> None:
        """``marts``: the model's (checked readable at open; announcements of any other are ignored: any
        role may ``pg_notify``); ``setting``: where ``dsn`` comes from, for the errors."""
        self.dsn = dsn
        self.setting = setting
        self.model = model
        self.marts = marts
        self.schema = schema
        self.settings = settings
        self.channel = martnotify.channel(schema)
        self.cache: ResultCache[Answer] = ResultCache(settings.cache_size, settings.cache_rows)
        self.versions: dict[str, int] = {}
        self.listening = asyncio.Event()
        self.column_types: dict[str, dict[str, str]] = {}
        """mart -> column -> its ``information_schema`` data type, read at start (``preflight``)."""
        self.unique_indexes: dict[str, list[tuple[str, ...]]] = {}
        """mart -> the columns of each of its unique indexes on NOT NULL columns (``UNIQUE_SQL``), read at
        start: how its entities' rows are paged (``rows.paging``)."""
        self._subscribers: set[asyncio.Queue[frozenset[str] | None]] = set()
        self._pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=settings.pool_size, open=False, configure=self._configure
        )
        self._listener: asyncio.Task[None] | None = None

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        timeout_ms = int(self.settings.statement_timeout_s * 1000)
        await conn.execute("SET default_transaction_read_only = on")  # the reader role is; this too
        await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        await conn.execute("SET TimeZone = 'UTC'")

    def preflight(self) -> None:
        """Fail fast, naming the setting, when PostgreSQL is unreachable or a mart not readable."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                needs = table_needs(self.schema, sorted(self.marts or ()), ["SELECT"])
                require_privileges(conn, needs, service="cdcwh serve", setting=self.setting)
                if self.model is not None:
                    rows = conn.execute(COLUMNS_SQL, (self.schema,)).fetchall()
                    types: dict[str, dict[str, str]] = {}
                    for table, column, data_type in rows:
                        types.setdefault(table, {})[column] = data_type
                    problems = self.model.missing_in({t: set(c) for t, c in types.items()})
                    if problems:
                        raise ConfigError(
                            f"the semantic model does not match the marts in schema {self.schema} "
                            f"(postgres.schema):\n  " + "\n  ".join(problems)
                        )
                    self.column_types = {t: c for t, c in types.items() if t in self.model.marts()}
                    for table, columns in conn.execute(UNIQUE_SQL, (self.schema,)).fetchall():
                        if table in self.column_types:
                            self.unique_indexes.setdefault(table, []).append(tuple(columns))
                    self._log_paging()
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cdcwh serve: cannot connect to PostgreSQL with {self.setting}: {exc}"
            ) from None

    def _log_paging(self) -> None:
        """Say at start which entities' keys are not unique in their marts (rows.paging)."""
        for name, entity in sorted(self.model.entities.items() if self.model else ()):
            types = self.column_types.get(entity.mart, {})
            order, unique = paging(entity, self.unique_indexes.get(entity.mart, ()), types)
            key = ", ".join(entity.primary_key)
            if order is None:
                log.warning(
                    "entity %s: mart %s has no primary key or unique index on NOT NULL columns, of types a "
                    "cursor can hold, cutting its key (%s): its rows come as a first page only, no cursor%s",
                    name,
                    entity.mart,
                    key,
                    "" if unique else "; no measure column opens",
                )
            elif not unique:
                log.info(
                    "entity %s: its key (%s) is not unique in mart %s: pages are ordered by (%s); no measure "
                    "column opens",
                    name,
                    key,
                    entity.mart,
                    ", ".join(order),
                )

    async def open(self) -> None:
        await asyncio.to_thread(self.preflight)
        try:
            await self._pool.open(wait=True)
            self._listener = asyncio.create_task(self._listen(), name="mart-listener")
            await asyncio.wait_for(self.listening.wait(), timeout=30)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    async def run(self, compiled: Compiled, *, use_cache: bool = True) -> Answer:
        key = (compiled.key(), tuple(map(repr, compiled.params)))
        use_cache = use_cache and bool(self.cache.size) and self.listening.is_set()
        if use_cache:
            found = self.cache.get(key)
            API_CACHE.labels("hit" if found is not None else "miss").inc()
            if found is not None:
                return Answer(found.columns, found.rows, found.marts, found.has_more, cached=True)
        generations = self.cache.generations(compiled.marts)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(compiled.query, compiled.params)
            fetched = await cursor.fetchall()
        has_more = len(fetched) > compiled.limit
        if has_more and not compiled.limited:
            raise QueryError(
                f"more than {compiled.limit} rows (serve.max_rows): "
                "add filters, a coarser granularity or a limit"
            )
        kept = fetched[: compiled.limit]
        rows = tuple(map(tuple, kept)) if compiled.raw else tuple(tuple(plain(v) for v in r) for r in kept)
        answer = Answer(compiled.columns, rows, compiled.marts, has_more)
        if use_cache:
            self.cache.put(key, compiled.marts, answer, generations, len(rows))
        return answer

    async def select(self, query: sql.Composed, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
            return rows

    def subscribe(self) -> asyncio.Queue[frozenset[str] | None]:
        queue: asyncio.Queue[frozenset[str] | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[frozenset[str] | None]) -> None:
        self._subscribers.discard(queue)

    def _announce(self, marts: frozenset[str] | None) -> None:
        self.cache.invalidate(marts)
        for queue in self._subscribers:
            queue.put_nowait(marts)

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    application_name="cdcwh-serve-listener",
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._announce(None)  # announcements may have been missed while not listening
                    self.listening.set()
                    attempt = 0
                    while True:
                        async for notify in conn.notifies(timeout=PING_S):
                            self._heard(notify.payload)
                        await conn.execute("SELECT 1")  # a quiet connection may be a dead one
            except psycopg.Error as exc:
                self.listening.clear()
                wait = RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)]
                attempt += 1
                log.warning(
                    "mart listener lost its connection (%s); again in %.1f s", type(exc).__name__, wait
                )
                await asyncio.sleep(wait)
            finally:
                self.listening.clear()

    def _heard(self, payload: str) -> None:
        try:
            versions = martnotify.decode(payload)
        except ValueError as exc:
            log.warning("ignoring a notification on %s: %s", self.channel, exc)
            return
        if self.marts is not None:
            versions = {m: v for m, v in versions.items() if m in self.marts}
            if not versions:
                return
        for mart, version in versions.items():
            self.versions[mart] = max(version, self.versions.get(mart, version))
            API_ANNOUNCEMENTS.labels(mart).inc()
        self._announce(frozenset(versions))
