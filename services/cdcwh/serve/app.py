"""The ASGI app of ``cdcwh serve``: ``/graphql`` (HTTP and graphql-ws WebSocket), the live page at ``/``,
and ``/healthz`` (ready once the mart announcements are listened to). Metrics are on the metrics port.

Over HTTP every request is rate limited per client address (``serve.client_rate_limit``, before anything
else), authenticated (401 without a valid bearer token), rate limited per subject (429 with
``Retry-After``), answered by strawberry, and audited. Over WebSocket the connection is rate limited per
client address, and the token comes in the ``connection_init`` payload (``{"token": "..."}``; browsers
cannot set headers) or the upgrade request's ``Authorization`` header, and is checked
once there; then each subscribe is rate limited (per subject), at most ``serve.max_subscriptions`` run at
once on a connection, every push is audited, and the socket is closed (4403) when the token expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, DuplicatedTypeName
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import create_type
from strawberry.types.base import get_object_definition
from strawberry.types.unset import UnsetType

from cdcwh.config import Settings
from cdcwh.metrics import API_LATENCY, API_REQUESTS
from cdcwh.pgprivileges import dsn_setting
from cdcwh.serve.audit import Access, AuditWriter
from cdcwh.serve.auth import Authenticator, AuthError, bearer
from cdcwh.serve.compile import QueryError
from cdcwh.serve.cost import QueryCostLimiter
from cdcwh.serve.live import Subscription
from cdcwh.serve.marts import BIGINT_SCALAR, BigInt, MartAccess, mart_fields, type_taken
from cdcwh.serve.model import SemanticModel, load_model
from cdcwh.serve.ratelimit import Limiter, RateLimited
from cdcwh.serve.schema import Context, Services, query_fields
from cdcwh.serve.store import Warehouse

STATIC = Path(__file__).parent / "static"
MAX_ALIASES = 10
MAX_BODY_BYTES = 256 * 1024
ERROR_CHARS = 500


class TooLarge(Exception):
    """A request body without a Content-Length, or longer than ``MAX_BODY_BYTES``."""


def client_address(request: Request | WebSocket) -> str:
    return request.client.host if request.client else "?"


class OperationAudit(SchemaExtension):
    """Puts the operation's hash (never its variables) and its outcome on the request's audit row."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        access = getattr(context, "access", None)
        if isinstance(access, Access) and access.operation == "query":
            query = self.execution_context.query or ""
            access.operation_hash = hashlib.sha256(query.encode()).hexdigest()
        yield
        result = self.execution_context.result
        if isinstance(access, Access) and access.operation == "query" and result is not None:
            errors = getattr(result, "errors", None)
            if errors:
                access.status = "error" if access.status == "ok" else access.status
                access.error = access.error or str(errors[0].message)[:ERROR_CHARS]


def _mask(error: GraphQLError) -> bool:
    """Hide unexpected errors' text; the client's own mistakes (and refusals) are told."""
    return error.original_error is not None and not isinstance(error.original_error, QueryError)


class ApiSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log only the unexpected errors; the clients' own (bad queries, refusals) are theirs to read."""
        super().process_errors([e for e in errors if _mask(e)], execution_context)


class View(GraphQL[Context, None]):
    def __init__(
        self,
        services: Services,
        authenticator: Authenticator,
        limiter: Limiter,
        schema: Any,
        client_limiter: Limiter,
    ) -> None:
        super().__init__(schema, graphql_ide=None, allow_queries_via_get=False)
        self.services = services
        self.authenticator = authenticator
        self.limiter = limiter
        self.client_limiter = client_limiter

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        state = request.scope.get("state", {})
        return Context(
            services=self.services,
            principal=state.get("principal"),
            access=state.get("access") or Access("subscription"),
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        token = params.get("token")
        if not isinstance(token, str):
            token = bearer({"authorization": str(params.get("Authorization", ""))}) or bearer(
                context.request.headers
            )
        try:
            self.client_limiter.hit(client_address(context.request))
            principal = await self.authenticator.principal_async(token)
        except (AuthError, RateLimited) as exc:
            unauthorized = isinstance(exc, AuthError)
            status = "unauthorized" if unauthorized else "rate_limited"
            self.services.audit.record(Access("subscription", status=status, error=f"{status}: {exc}"))
            API_REQUESTS.labels(status).inc()
            raise ConnectionRejectionError({"message": status}) from None
        context.principal = principal
        return None


class Endpoint:
    """``/graphql`` over HTTP: authenticate, rate limit, answer, audit."""

    def __init__(self, view: View) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.view(scope, receive, send)
            return
        access = Access("query")
        started = time.perf_counter()
        status_code = 500
        headers = Request(scope).headers
        try:
            self.view.client_limiter.hit(client_address(Request(scope)))
            principal = await self.view.authenticator.principal_async(bearer(headers))
            access.subject, access.roles = principal.subject, principal.roles
            self.view.limiter.hit(principal.subject)
            length = headers.get("content-length", "")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                raise TooLarge
        except TooLarge:
            access.status, status_code, access.error = "error", 413, "request body too large"
            message = {
                "errors": [{"message": f"a request body of at most {MAX_BODY_BYTES} bytes, with its length"}]
            }
            await JSONResponse(message, 413)(scope, receive, send)
        except AuthError as exc:
            access.status, status_code, access.error = "unauthorized", 401, f"unauthorized: {exc}"
            challenge = {"WWW-Authenticate": 'Bearer realm="cdcwh"'}
            await JSONResponse({"errors": [{"message": "unauthorized"}]}, 401, challenge)(
                scope, receive, send
            )
        except RateLimited as exc:
            access.status, status_code, access.error = "rate_limited", 429, str(exc)
            retry = {"Retry-After": str(exc.retry_after_s)}
            await JSONResponse({"errors": [{"message": "too many requests"}]}, 429, retry)(
                scope, receive, send
            )
        else:
            scope.setdefault("state", {}).update(principal=principal, access=access)

            async def sending(message: Message) -> None:
                nonlocal status_code
                if message["type"] == "http.response.start":
                    status_code = message["status"]
                await send(message)

            try:
                await self.view(scope, receive, sending)
            except BaseException as exc:
                access.status, access.error = "error", f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
                raise
            if status_code >= 400 and access.status == "ok":
                access.status, access.error = "error", access.error or f"HTTP {status_code}"
        finally:
            access.duration_s = time.perf_counter() - started
            API_LATENCY.observe(access.duration_s)
            API_REQUESTS.labels(access.status).inc()
            self.view.services.audit.record(access)


def build_schema(
    settings: Settings,
    model: SemanticModel,
    column_types: Mapping[str, Mapping[str, str]],
    unique_indexes: Mapping[str, Sequence[Sequence[str]]],
) -> ApiSchema:
    """The schema: ``semantic``, ``members`` and a typed field per entity of ``model`` (its columns typed
    from ``column_types``: mart -> column -> PostgreSQL data type), the subscription, and the limits."""
    serve = settings.serve
    fixed = query_fields()
    reserved = {f.graphql_name or f.python_name for f in fixed}
    typed, marts = mart_fields(model, column_types, reserved, unique_indexes)
    names = frozenset(m.field_name for m in marts)
    by_name = {m.field_name: m for m in marts}
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [  # a fresh one per request
        lambda: QueryDepthLimiter(max_depth=serve.max_depth),
        lambda: MaxTokensLimiter(max_token_count=serve.max_tokens),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: QueryCostLimiter(max_cost=serve.max_cost, max_rows=serve.max_rows, marts=names),
        lambda: MartAccess(marts=by_name),
        lambda: MaskErrors(should_mask_error=_mask),
        OperationAudit,
    ]
    query = create_type("Query", [*fixed, *typed])
    try:
        schema = ApiSchema(
            query=query,
            subscription=Subscription,
            extensions=extensions,
            config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
        )
    except DuplicatedTypeName as exc:  # an entity's type (or page type) takes another type's name
        found = re.match(r"Type (\w+) is", exc.message)
        name = found.group(1) if found else ""
        entity = next((m.entity for m in marts if name in (m.node.__name__, m.page.__name__)), None)
        if entity is None:
            raise
        raise type_taken(entity, name) from None
    for mart in marts:  # strawberry merges some types of one name silently (Query, two entities' types)
        for cls in (mart.node, mart.page):
            if schema.get_type_by_name(cls.__name__) is not get_object_definition(cls):
                raise type_taken(mart.entity, cls.__name__)
    return schema


def build_app(
    settings: Settings,
    *,
    reader_dsn: str,
    audit_dsn: str,
    owner_dsn: str | None = None,
    model: SemanticModel | None = None,
) -> Starlette:
    """The app; misconfiguration (no way to verify tokens, a bad model) raises ``ConfigError`` here."""
    authenticator = Authenticator(settings.serve)
    model = model or load_model(settings.serve.semantic_path)
    services = Services(
        model=model,
        warehouse=Warehouse(
            reader_dsn,
            settings.postgres.schema_,
            settings.serve,
            frozenset(model.marts()),
            dsn_setting(settings, "reader"),
            model,
        ),
        audit=AuditWriter(
            audit_dsn, settings.postgres.audit_schema, owner_dsn, setting=dsn_setting(settings, "audit")
        ),
        max_rows=settings.serve.max_rows,
        max_members=settings.serve.max_members,
        limiter=Limiter(settings.serve.rate_limit),
        max_subscriptions=settings.serve.max_subscriptions,
    )
    client_limiter = Limiter(settings.serve.client_rate_limit)
    # replaced at start by the schema typed from the marts' columns (the warehouse reads them at open)
    view = View(
        services, authenticator, services.limiter, build_schema(settings, model, {}, {}), client_limiter
    )
    endpoint = Endpoint(view)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:  # a failed start closes what was opened
            await services.audit.open()
            stack.push_async_callback(services.audit.close)
            await services.warehouse.open()
            stack.push_async_callback(services.warehouse.close)
            warehouse = services.warehouse
            view.schema = build_schema(settings, model, warehouse.column_types, warehouse.unique_indexes)
            yield

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def healthz(request: Request) -> Response:
        ready = services.warehouse.listening.is_set()
        return PlainTextResponse("ok" if ready else "not listening", 200 if ready else 503)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/graphql", endpoint, methods=["POST"]),
            WebSocketRoute("/graphql", endpoint),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    return app
