"""The schema registry adapter: Avro writer schemas by id, for ``cdcwh.core.avro``.

``RegistrySchemas.writer_schemas(ids)`` asks a Confluent-compatible registry (``schema_registry.url``,
``schema_registry.basic_auth``) for the ids it has not seen, with confluent-kafka's ``SchemaRegistryClient``,
and keeps the last ``POSITIVE_MAX`` schemas (a schema id never changes meaning). An id the registry does not
know (404) maps to ``None``: its records are quarantined as ``unknown_schema``; that answer is kept only
``NEGATIVE_TTL_S`` seconds (the schema may be registered just after), which is also what spares a batch of
garbage ids a request per record. A registry that does not answer (refused, timed
out, a 5xx) raises :class:`~cdcwh.errors.TransientError` before anything of the batch is landed, so ingest
retries the whole batch (``cdcwh.retry``). Without a URL every id is unknown, with the setting named. The URL
is shown with its password masked (``cdcwh.redaction.redact_dsn``): ``user:password@`` in it is allowed.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import httpx

from cdcwh.config import SchemaRegistrySettings
from cdcwh.core.avro import WriterSchemas
from cdcwh.errors import ConfigError, TransientError
from cdcwh.redaction import redact_dsn

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

log = logging.getLogger(__name__)

NOT_CONFIGURED: Final = "schema_registry.url (CDCWH_SCHEMA_REGISTRY__URL) is not set"
TIMEOUT_S: Final = 10
POSITIVE_MAX: Final = 4096
NEGATIVE_TTL_S: Final = 30.0


class RegistrySchemas:
    """Writer schemas by id from the registry: known ones in an LRU cache, unknown ones for a short while."""

    def __init__(
        self,
        settings: SchemaRegistrySettings,
        client: SchemaRegistryClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = redact_dsn(settings.url) if settings.url else None  # shown in warnings and errors
        self._known: OrderedDict[int, str] = OrderedDict()
        self._missing: dict[int, float] = {}  # id -> when the registry said it does not know it
        self._clock = clock
        if client is None and settings.url:
            conf: dict[str, object] = {"url": settings.url, "timeout": TIMEOUT_S, "max.retries": 0}
            if settings.basic_auth is not None:
                conf["basic.auth.user.info"] = settings.basic_auth.get_secret_value()
            client = _client_class()(conf)
        self._client = client

    def writer_schemas(self, ids: Iterable[int]) -> WriterSchemas:
        """The schemas of ``ids`` (``None`` for an id the registry does not know); raises
        ``TransientError`` when the registry cannot be asked."""
        if self._client is None:
            return WriterSchemas(unavailable=NOT_CONFIGURED)
        now = self._clock()
        found: dict[int, str | None] = {}
        for schema_id in ids:
            text = self._known.get(schema_id)
            if text is not None:
                self._known.move_to_end(schema_id)
            elif schema_id not in self._missing or now - self._missing[schema_id] >= NEGATIVE_TTL_S:
                text = self._fetch(self._client, schema_id)
                self._remember(schema_id, text, now)
            found[schema_id] = text
        return WriterSchemas(found)

    def _remember(self, schema_id: int, text: str | None, now: float) -> None:
        if text is None:
            if len(self._missing) >= POSITIVE_MAX:  # garbage ids: forget the expired answers
                self._missing = {i: t for i, t in self._missing.items() if now - t < NEGATIVE_TTL_S}
            self._missing[schema_id] = now
            return
        self._missing.pop(schema_id, None)
        self._known[schema_id] = text
        if len(self._known) > POSITIVE_MAX:
            self._known.popitem(last=False)

    def _fetch(self, client: SchemaRegistryClient, schema_id: int) -> str | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                log.warning("schema id %d is not in the schema registry at %s", schema_id, self.url)
                return None
            if exc.http_status_code in (401, 403):
                raise ConfigError(
                    f"the schema registry at {self.url} refused the credentials ({exc.http_status_code}): "
                    "check schema_registry.basic_auth (CDCWH_SCHEMA_REGISTRY__BASIC_AUTH)"
                ) from exc
            raise TransientError(
                f"the schema registry at {self.url} answered {exc.http_status_code} for schema id "
                f"{schema_id}: {exc.error_message}"
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise TransientError(
                f"the schema registry at {self.url} is unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        if schema.schema_type not in (None, "AVRO"):
            log.warning("schema id %d is %s, not Avro", schema_id, schema.schema_type)
            return None
        return str(schema.schema_str)


def _client_class() -> Any:
    """confluent-kafka's client, imported when a registry is configured: its import pulls in authlib, whose
    deprecation warning about httpx would otherwise be printed by every cdcwh command."""
    with warnings.catch_warnings():
        import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - its "always" filter, then ours

        warnings.simplefilter("ignore")
        from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient
