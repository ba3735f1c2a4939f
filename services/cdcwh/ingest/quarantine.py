"""Quarantine: rejected records kept with their reason and original bytes, in Iceberg and in a DLQ topic.

``bronze._quarantine`` is the system of record (exactly once, by the same landed-offsets protocol as the
bronze tables, every byte of the record); ``<topic>.dlq`` carries the same records for Kafka-side tooling, at
least once and best effort: a value longer than ``CDCWH_INGEST__DLQ_MAX_VALUE_BYTES`` is cut (its full size
and sha256 in headers), and a publish that still fails after retries is counted
(``cdcwh_dead_letter_failures_total``) and logged, never raised: ingest goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cdcwh import metrics
from cdcwh.core.record import Rejection
from cdcwh.errors import ConfigError, ProduceError
from cdcwh.kafka import with_producer_defaults
from cdcwh.retry import retrying

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
DEFAULT_DLQ_MAX_VALUE_BYTES: Final = 900_000
DLQ_OVERHEAD_BYTES: Final = 32_768
"""Room for headers (the detail is at most 500 characters) and record framing in ``message.max.bytes``."""
DEFAULT_RETRY_BUDGET_S: Final = 30.0
DEFAULT_TIMEOUT_S: Final = 10.0
# delivery errors that the same record will get again however often it is retried
PERMANENT_ERRORS: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("kafka_ts", pa.timestamp("us", tz="UTC")),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def quarantine_rows(rejections: Sequence[Rejection], now: datetime) -> pa.Table:
    """One Arrow row per rejection, in QUARANTINE_SCHEMA."""
    return pa.table(
        {
            "reason": [str(r.reason) for r in rejections],
            "detail": [r.detail for r in rejections],
            "topic": [r.topic for r in rejections],
            "partition": [r.partition for r in rejections],
            "offset": [r.offset for r in rejections],
            "key": [r.key for r in rejections],
            "value": [r.value for r in rejections],
            "kafka_ts": [None if r.timestamp_ms is None else r.timestamp_ms * 1000 for r in rejections],
            "quarantined_at": [now] * len(rejections),
        },
        schema=QUARANTINE_SCHEMA,
    )


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class KafkaDeadLetterPublisher:
    """Produces rejected records to ``<topic>.dlq``, the reason in headers; ``publish`` waits for delivery.

    ``max_value_bytes``: values are cut to this (unset: ``CDCWH_INGEST__DLQ_MAX_VALUE_BYTES``); the producer's
    ``message.max.bytes`` is set above it. ``retry_budget_s``: how long transient failures (a broker away, a
    delivery timed out) are retried; ``timeout_s``: one attempt's topic creation and delivery timeout."""

    def __init__(
        self,
        client_config: dict[str, Any],
        partitions: int = 1,
        *,
        max_value_bytes: int | None = None,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._client_config = client_config
        self.max_value_bytes = configured_max_value_bytes() if max_value_bytes is None else max_value_bytes
        self.retry_budget_s = retry_budget_s
        self.timeout_s = timeout_s
        self._producer = self._new_producer()
        self._partitions = partitions
        self._known: set[str] = set()
        self._last_transient = ""

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **with_producer_defaults(self._client_config),
                "message.max.bytes": message_max_bytes(self.max_value_bytes),
                # a delivery that cannot complete fails within one attempt, so that a retry re-sends it
                # rather than queueing it a second time
                "message.timeout.ms": max(1, int(self.timeout_s * 1000)),
            }
        )

    def _ensure_topics(self, topics: set[str]) -> None:
        missing = topics - self._known
        if not missing:
            return
        admin = AdminClient(self._client_config)
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=self._partitions) for topic in sorted(missing)],
            operation_timeout=self.timeout_s,
            request_timeout=self.timeout_s,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout=self.timeout_s + 5)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else exc
                if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise ProduceError(f"cannot create the DLQ topic {topic}: {error}") from exc
            self._known.add(topic)

    def publish(self, rejections: Sequence[Rejection]) -> list[Rejection]:
        """Publish ``rejections`` to their DLQ topics, retrying transient failures for ``retry_budget_s``.

        Never raises: returns the rejections that could not be published (counted in
        ``cdcwh_dead_letter_failures_total`` and logged; the quarantine table keeps them)."""
        if not rejections:
            return []
        pending = list(rejections)
        failed: list[Rejection] = []
        last_error = ""
        try:
            for attempt in retrying(
                f"publishing {len(rejections)} dead letters", budget_s=self.retry_budget_s
            ):
                with attempt:
                    pending, permanent = self._attempt(pending)
                    failed.extend(r for r, _ in permanent)
                    if permanent:
                        last_error = permanent[-1][1]
                    if pending:
                        raise ProduceError(
                            f"{len(pending)} dead letters undelivered, e.g. {self._last_transient}"
                        )
        except Exception as exc:  # a DLQ is best effort: the quarantine table holds the records
            failed.extend(pending)
            last_error = f"{type(exc).__name__}: {exc}"
        if failed:
            for topic, count in Counter(r.topic for r in failed).items():
                metrics.DEAD_LETTER_FAILURES.labels(topic).inc(count)
            log.error(
                "could not publish %d of %d dead letters (%s); bronze._quarantine holds them",
                len(failed),
                len(rejections),
                last_error,
            )
        return failed

    def _attempt(self, rejections: list[Rejection]) -> tuple[list[Rejection], list[tuple[Rejection, str]]]:
        """One try: ``(transient failures, permanent failures with their error)``."""
        self._ensure_topics({dlq_topic(r.topic) for r in rejections})
        outcome: dict[int, KafkaError | None] = {}
        fatal = False

        def on_delivery(err: KafkaError | None, msg: Any, index: int) -> None:
            nonlocal fatal
            outcome[index] = err
            fatal = fatal or (err is not None and err.fatal())

        transient: list[Rejection] = []
        permanent: list[tuple[Rejection, str]] = []
        produced: list[int] = []
        for index, rejection in enumerate(rejections):
            key, value, headers = dead_letter(rejection, self.max_value_bytes)
            try:
                self._producer.produce(
                    dlq_topic(rejection.topic),
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=lambda err, msg, index=index: on_delivery(err, msg, index),
                )
            except BufferError as exc:  # the local queue is full: wait for this attempt's deliveries
                transient.append(rejection)
                self._last_transient = f"BufferError: {exc}"
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                fatal = fatal or (isinstance(error, KafkaError) and error.fatal())
                if isinstance(error, KafkaError) and error.code() not in PERMANENT_ERRORS:
                    transient.append(rejection)
                    self._last_transient = str(error)
                else:
                    permanent.append((rejection, str(error or exc)))
            else:
                produced.append(index)
            self._producer.poll(0)
        remaining = self._producer.flush(self.timeout_s + 5)
        if remaining:  # not even timed out yet: drop them from the queue, a retry sends them again
            self._producer.purge()
            self._producer.flush(1)
        for index in produced:
            rejection = rejections[index]
            err = outcome.get(index, KafkaError(KafkaError._TIMED_OUT))
            if err is None:
                continue
            # undelivered without a broker error: perhaps a broker that lost its state (renewed_producer)
            fatal = fatal or err.code() in _UNDELIVERED
            if err.code() in PERMANENT_ERRORS:
                permanent.append((rejection, str(err)))
            else:
                transient.append(rejection)
                self._last_transient = str(err)
        if fatal:  # an idempotent producer in a fatal state (or stuck, above) refuses everything: a new one
            self._producer = self._new_producer()
        if transient:  # a broker that lost its topics waits for them: check them on the next try
            self._known.clear()
        return transient, permanent


_UNDELIVERED: Final = frozenset(
    {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
)


def message_max_bytes(max_value_bytes: int) -> int:
    """The DLQ producer's ``message.max.bytes``: the key and value (cut to ``max_value_bytes`` together),
    headers and framing."""
    return max_value_bytes + DLQ_OVERHEAD_BYTES


def configured_max_value_bytes() -> int:
    """``CDCWH_INGEST__DLQ_MAX_VALUE_BYTES`` (the default when the configuration cannot be read here)."""
    from cdcwh.config import load_settings

    try:
        return load_settings().ingest.dlq_max_value_bytes
    except ConfigError:
        return DEFAULT_DLQ_MAX_VALUE_BYTES


def dead_letter(
    rejection: Rejection, max_value_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The DLQ record of a rejection: ``(key, value, headers)``, the key and value cut to ``max_value_bytes``
    together: the key whole if it fits (else cut to the limit), the value to what is left. A cut part gets
    ``cdcwh.<part>.size`` (its full length) and ``cdcwh.<part>.sha256`` (hex, of the full bytes) headers, and
    ``cdcwh.truncated`` lists the cut parts."""
    headers = [
        ("cdcwh.reason", str(rejection.reason).encode()),
        ("cdcwh.detail", rejection.detail.encode("utf-8", "replace")),
        ("cdcwh.source.partition", str(rejection.partition).encode()),
        ("cdcwh.source.offset", str(rejection.offset).encode()),
    ]
    cut: list[str] = []

    def fit(part: str, data: bytes | None, limit: int) -> bytes | None:
        if data is None or len(data) <= limit:
            return data
        cut.append(part)
        headers.append((f"cdcwh.{part}.size", str(len(data)).encode()))
        headers.append((f"cdcwh.{part}.sha256", hashlib.sha256(data).hexdigest().encode()))
        return data[:limit]

    key = fit("key", rejection.key, max_value_bytes)
    value = fit("value", rejection.value, max_value_bytes - len(key or b""))
    if cut:
        headers.append(("cdcwh.truncated", ",".join(cut).encode()))
    return key, value, headers
