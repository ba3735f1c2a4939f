"""The sink service: gold change topics -> PostgreSQL marts.

Loop: consume up to ``CDCWH_SINK__BATCH_MAX_ROWS`` messages or ``CDCWH_SINK__BATCH_MAX_S`` seconds, apply
them in one Postgres transaction (``PostgresMartSink``), then commit the Kafka offsets of what was applied
(``cdcwh.sink.offsets``). When Postgres is
unavailable the same batch is retried with back-off (for up to 10 minutes, then the sink exits for its
supervisor to restart it): nothing is skipped, and the
consumer is paused meanwhile so memory stays bounded. A change PostgreSQL refuses for its data is a dead
letter (``<schema>._dead_letters``, ``cdcwh_sink_dead_letters_total``): the rest of the batch applies and the
offsets are committed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime
from functools import partial

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, Message
from confluent_kafka.admin import AdminClient

from cdcwh import metrics
from cdcwh.audit.rows import apply_rows
from cdcwh.audit.writer import BufferedAuditWriter
from cdcwh.config import Settings
from cdcwh.embedded import postgres_dsn
from cdcwh.errors import InfrastructureError
from cdcwh.goldfeed import MalformedGoldChange, decode, gold_topic
from cdcwh.kafka import client_config, consumer_config, ensure_topics
from cdcwh.kafka.catchup import CatchUpTracker
from cdcwh.kafka.offsets import consumed_to_end
from cdcwh.models import load_models
from cdcwh.pgprivileges import dsn_setting
from cdcwh.retry import retrying
from cdcwh.sink import offsets
from cdcwh.sink.postgres import ApplyResult, PostgresMartSink
from cdcwh.sink.resubscribe import Resubscriber
from cdcwh.stopping import stop_on_signals

log = logging.getLogger(__name__)

STATS_INTERVAL_MS = 5000
CATCH_UP_STATS_INTERVAL_MS = 250


def sink_group(settings: Settings) -> str:
    return f"{settings.kafka.group_prefix}-sink"


def gold_topics(consumer: Consumer, prefix: str, *, timeout_s: float = 10.0) -> dict[str, int]:
    metadata = consumer.list_topics(timeout=timeout_s).topics
    return {name: len(t.partitions) for name, t in metadata.items() if name.startswith(prefix + ".")}


class SinkService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group = sink_group(settings)
        self.tracker = CatchUpTracker(self.group, expected_partitions=0)
        self.sink = PostgresMartSink(
            postgres_dsn(settings, "sink"),
            settings.postgres.schema_,
            settings.sql_path,
            settings.contracts_path,
            owner_dsn=postgres_dsn(settings, "owner"),
            setting=dsn_setting(settings, "sink"),
            owner_setting=dsn_setting(settings, "owner"),
        )
        self.stopping = threading.Event()
        self.audit = BufferedAuditWriter.from_settings("sink", settings)
        self.pauses = offsets.Pauses()
        self.resubscriber = Resubscriber(self.pauses.callbacks())

    def _consumer(self, stats_interval_ms: int) -> Consumer:
        config = consumer_config(self.settings, self.group)
        config.update(
            {
                "statistics.interval.ms": stats_interval_ms,
                "stats_cb": self.tracker.on_stats,
                # the subscription is a regex: notice a new mart's topic within seconds, not minutes
                "topic.metadata.refresh.interval.ms": 2000,
                **offsets.CONSUMER_SETTINGS,
            }
        )
        return Consumer(config)

    def run(self, *, until_caught_up: bool = False, idle_s: float = 1.0) -> int:
        prefix = self.settings.kafka.gold_topic_prefix
        if not until_caught_up:
            self._ensure_gold_topics()
        consumer = self._consumer(CATCH_UP_STATS_INTERVAL_MS if until_caught_up else STATS_INTERVAL_MS)
        topics = gold_topics(consumer, prefix)
        if until_caught_up and not topics:
            log.info("no gold topics (%s.*) yet: nothing to apply", prefix)
            consumer.close()
            return 0
        config = consumer_config(self.settings, self.group)
        if until_caught_up and consumed_to_end(config, self.group, topics):
            consumer.close()
            self.sink.connect()  # what a start promises still holds: the mart tables, widenings, privileges
            self.sink.close()
            log.info("every gold partition is applied to its end: nothing to apply")
            return 0
        self.tracker.expected_partitions = sum(topics.values())
        pattern = "^" + re.escape(prefix) + r"\..+"
        consumer.subscribe([pattern], **self.pauses.callbacks())
        topics_on_broker = partial(gold_topics, consumer, prefix, timeout_s=2.0)
        if not until_caught_up:
            stop_on_signals(self.stopping)
        self.sink.connect()
        caught_up_since: float | None = None
        try:
            while not self.stopping.is_set():
                messages = self._collect(consumer)
                self.resubscriber.check(consumer, topics_on_broker, pattern)
                if messages:
                    started = datetime.now(UTC)
                    result = self._apply_with_retry(consumer, messages)
                    offsets.commit_applied(consumer, messages)
                    if self.audit is not None:  # after the commits; never raises (cdcwh.audit.writer)
                        self.audit.record_from(
                            partial(
                                apply_rows,
                                ((m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages),
                                rows_in=len(messages),
                                rows_out=sum(result.upserts.values()) + sum(result.deletes.values()),
                                dead_letters=len(result.dead_letters),
                                started=started,
                                finished=datetime.now(UTC),
                            )
                        )
                if until_caught_up:
                    if self.tracker.caught_up():
                        caught_up_since = caught_up_since or time.monotonic()
                        if time.monotonic() - caught_up_since >= idle_s:
                            log.info("caught up with every gold partition")
                            return 0
                    else:
                        caught_up_since = None
        finally:
            consumer.close()
            self.sink.close()
            if self.audit is not None:
                self.audit.close()
        return 0

    def _ensure_gold_topics(self) -> None:
        """Create the change topics of every gold model before the first join, as the transform does at its
        start: a topic that appears after the join costs a consumer-group rebalance (seconds on the embedded
        broker) while the mart's first changes wait. Without the right to create topics the sink goes on and
        picks them up as the transform creates them."""
        prefix = self.settings.kafka.gold_topic_prefix
        names = [gold_topic(prefix, model.name) for model in load_models(self.settings.sql_path / "gold")]
        try:
            ensure_topics(
                AdminClient(client_config(self.settings)), names, self.settings.transform.gold_partitions
            )
        except InfrastructureError as exc:
            log.warning("%s; the sink subscribes to the gold topics as they appear", exc)

    def _collect(self, consumer: Consumer) -> list[Message]:
        deadline = time.monotonic() + self.settings.sink.batch_max_s
        messages: list[Message] = []
        while len(messages) < self.settings.sink.batch_max_rows and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch = consumer.consume(self.settings.sink.batch_max_rows - len(messages), timeout=remaining)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise RuntimeError(f"Kafka consumer error: {error}")
                    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        self.resubscriber.vanished()
                    log.warning("Kafka consumer: %s", error)
                    continue
                messages.append(message)
        return messages

    def _apply_with_retry(self, consumer: Consumer, messages: list[Message]) -> ApplyResult:
        changes = []
        for message in messages:
            key, value = message.key(), message.value()
            if key is None or value is None:
                continue
            try:
                changes.append(decode(key, value))
            except MalformedGoldChange as exc:  # nothing is applied or committed: the offsets stay put
                where = f"{message.topic()} partition {message.partition()} offset {message.offset()}"
                raise MalformedGoldChange(f"{where}: {exc}") from exc
        started = time.monotonic()

        def before_sleep(error: BaseException, wait: float) -> None:
            metrics.ERRORS.labels("sink", "postgres_unavailable").inc()
            self.sink.close()
            if not self.pauses.waiting:  # keep the group (and the partitions) while Postgres is away
                self.pauses.pause(consumer)

        for attempt in retrying(
            "applying a sink batch to PostgreSQL",
            sleep=lambda seconds: self._wait(consumer, seconds),
            before_sleep=before_sleep,
        ):
            with attempt:
                started = time.monotonic()
                result = self.sink.apply(changes)
        if self.pauses.waiting:
            self.pauses.resume(consumer)
        metrics.SINK_BATCH_DURATION.observe(time.monotonic() - started)
        for mart, n in result.upserts.items():
            metrics.SINK_ROWS.labels(mart, "upsert").inc(n)
        for mart, n in result.deletes.items():
            metrics.SINK_ROWS.labels(mart, "delete").inc(n)
        for letter in result.dead_letters:
            metrics.SINK_DEAD_LETTERS.labels(letter.mart, letter.reason).inc()
            log.warning(
                "dead letter: %s change of %s key %s version %d refused by PostgreSQL (%s, SQLSTATE %s): %s; "
                "recorded in %s._dead_letters, the rest of the batch applied",
                letter.op,
                letter.mart,
                letter.key,
                letter.version,
                letter.reason,
                letter.sqlstate,
                letter.error.splitlines()[0] if letter.error else "",
                self.settings.postgres.schema_,
            )
        now = time.time()
        source_times = pa.array([c.source_ts_ms for c in changes], pa.timestamp("ms", tz="UTC"))
        metrics.observe_freshness("postgres", source_times, now)
        metrics.LAST_SUCCESS.labels("sink").set(now)
        log.info(
            "applied %d gold changes (%d messages) in %.2fs",
            sum(result.upserts.values()) + sum(result.deletes.values()),
            len(messages),
            time.monotonic() - started,
        )
        return result

    def _wait(self, consumer: Consumer, seconds: float) -> None:
        """Sleep while serving the consumer (heartbeats, rebalances) so the group keeps us."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)  # paused: returns no messages, keeps the session alive
            if message is not None and message.error() is None:
                offsets.give_back(consumer, message)  # from a partition assigned during the wait
            if self.stopping.is_set():
                raise SystemExit(0)


def run_sink(settings: Settings, *, until_caught_up: bool = False, idle_s: float = 1.0) -> int:
    return SinkService(settings).run(until_caught_up=until_caught_up, idle_s=idle_s)
