"""The subscription: a semantic query's answer now, then each new answer after the sink announces a new
version of a mart it reads (``Warehouse`` wakes it); an unchanged answer is not pushed again. Each push is
audited; PostgreSQL being away delays pushes, it does not end the subscription. Each subscribe is rate
limited per subject, at most ``serve.max_subscriptions`` run on one connection, and the connection is closed
(4403) when the caller's token expires."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from typing import Any

import psycopg
import strawberry
from graphql import print_ast
from psycopg_pool import PoolTimeout
from strawberry.types import Info

from cdcwh.metrics import API_PUSHES, API_SUBSCRIPTIONS
from cdcwh.serve.audit import Access
from cdcwh.serve.compile import QueryError
from cdcwh.serve.ratelimit import RateLimited
from cdcwh.serve.schema import Context, SemanticQueryInput, SemanticResult, compile_input, to_result

log = logging.getLogger(__name__)
RETRY_S = 1.0


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The answer now, then each new answer after a mart it reads changes."
    )
    async def semantic(
        self, info: Info[Context, None], query: SemanticQueryInput
    ) -> AsyncGenerator[SemanticResult, None]:
        context = info.context
        services = context.services
        operation_hash = hashlib.sha256(print_ast(info.operation).encode()).hexdigest()

        def access() -> Access:
            principal = context.principal
            return Access(
                "subscription",
                subject=principal.subject if principal else None,
                roles=principal.roles if principal else (),
                operation_hash=operation_hash,
            )

        first = access()
        expires = float(context.principal.claims.get("exp", math.inf)) if context.principal else 0.0
        try:
            if expires <= time.time():
                first.status = "unauthorized"
                raise QueryError("the token has expired")
            try:
                services.limiter.hit(first.subject or "")
            except RateLimited as exc:
                first.status = "rate_limited"
                raise QueryError(f"too many requests; retry after {exc.retry_after_s} s") from None
            if context.subscriptions >= services.max_subscriptions:
                raise QueryError(
                    f"at most {services.max_subscriptions} subscriptions on one connection "
                    "(serve.max_subscriptions)"
                )
            compiled = compile_input(context, query, first)
        except QueryError as exc:
            first.status = "error" if first.status == "ok" else first.status
            first.error = str(exc)
            services.audit.record(first)
            raise
        queue = services.warehouse.subscribe()
        API_SUBSCRIPTIONS.inc()
        context.subscriptions += 1
        try:
            last: tuple[tuple[Any, ...], ...] | None = None
            pending: frozenset[str] | None = compiled.marts
            while True:
                if pending is None or pending & compiled.marts:
                    record = access()
                    started = time.perf_counter()
                    try:
                        answer = await services.warehouse.run(compiled)
                    except (psycopg.OperationalError, PoolTimeout) as exc:  # PostgreSQL away: try again
                        log.warning(
                            "a subscription could not read the marts (%s); retrying", type(exc).__name__
                        )
                        await asyncio.sleep(RETRY_S)
                        pending = None
                        continue
                    except Exception as exc:  # the subscription ends: say so in its audit row
                        record.status, record.error = "error", f"{type(exc).__name__}: {exc}"[:500]
                        record.duration_s = time.perf_counter() - started
                        services.audit.record(record)
                        raise
                    record.duration_s = time.perf_counter() - started
                    if answer.rows != last:
                        record.marts, record.rows = set(answer.marts), len(answer.rows)
                        services.audit.record(record)
                        API_PUSHES.inc()
                        last = answer.rows
                        yield to_result(answer)
                try:
                    async with asyncio.timeout(max(0.0, expires - time.time())):
                        pending = await queue.get()
                except TimeoutError:
                    log.info("closing a subscription's connection: its token expired")
                    with contextlib.suppress(RuntimeError):
                        await context.request.close(code=4403, reason="token expired")
                    return
                while not queue.empty() and pending is not None:  # coalesce a burst of announcements
                    more = queue.get_nowait()
                    pending = None if more is None else pending | more
        finally:
            services.warehouse.unsubscribe(queue)
            API_SUBSCRIPTIONS.dec()
            context.subscriptions -= 1
