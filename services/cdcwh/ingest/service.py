"""The ingest service: a quixstreams application from the Debezium topics to bronze.

Every matched topic feeds one ``BronzeSink``, which buffers raw records. At each quixstreams checkpoint
(every ``CDCWH_INGEST__COMMIT_INTERVAL_S`` seconds or ``CDCWH_INGEST__COMMIT_RECORDS`` records) the sink
lands the batch through ``IcebergBronzeWriter`` (see its docstring for the commit order), and only when that
returns does quixstreams commit the Kafka offsets.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.models import HeadersTuples
from quixstreams.sinks import BaseSink

from cdcwh import faults, metrics
from cdcwh.audit.rows import landing_rows
from cdcwh.audit.writer import BufferedAuditWriter
from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import IcebergSettings, Settings
from cdcwh.contracts import load_contracts
from cdcwh.core.record import RawRecord
from cdcwh.ingest.bronze import IcebergBronzeWriter
from cdcwh.ingest.maintenance import maintain_all
from cdcwh.ingest.probe import KafkaRecordProbe
from cdcwh.ingest.quarantine import DLQ_SUFFIX, KafkaDeadLetterPublisher
from cdcwh.kafka import client_config, consumer_config
from cdcwh.kafka.catchup import CatchUpTracker
from cdcwh.kafka.offsets import consumed_to_end
from cdcwh.retry import retrying
from cdcwh.schema_registry import RegistrySchemas
from cdcwh.stopping import stop_on_signals

log = logging.getLogger(__name__)

# how long a batch is retried against an unavailable catalog or store; below librdkafka's
# max.poll.interval.ms (300 s), after which the group would drop this member while it waits
LAND_RETRY_S = 120.0
STATS_INTERVAL_MS = 5000
CATCH_UP_STATS_INTERVAL_MS = 250
JOIN_WAIT_S = 60.0  # longest a topic change waits for the group join to finish
# Between checkpoints the buffer and the decoder keep hundreds of thousands of young objects alive, and with
# CPython's default thresholds (700, 10, 10) the collector runs thousands of times per checkpoint (its
# measured share of the CPU: docs/benchmarks.md, "What limits each figure"). Nothing here makes cycles in
# volume: collect far less often.
GC_THRESHOLDS = (50_000, 20, 10)


class BronzeSink(BaseSink):
    """Buffers raw Kafka records and lands them in bronze at each quixstreams checkpoint."""

    def __init__(
        self,
        writer: IcebergBronzeWriter,
        data_dir: Path | None = None,
        maintenance: IcebergSettings | None = None,
        audit: BufferedAuditWriter | None = None,
    ) -> None:
        """``data_dir``: where the ``landed`` fault point (``cdcwh.faults``) leaves its marker; without it
        the point is never hit."""
        super().__init__()
        self.writer = writer
        self.maintenance = maintenance
        self._next_maintenance = time.monotonic() + (maintenance.maintain_interval_s if maintenance else 0)
        self._buffer: list[RawRecord] = []
        self._data_dir = data_dir
        self.audit = audit

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: HeadersTuples,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self._buffer.append(RawRecord(topic, partition, offset, timestamp, key, value))

    def flush(self) -> None:
        records, self._buffer = self._buffer, []
        if not records:
            return
        started = time.monotonic()
        started_at = datetime.now(UTC)
        for topic, count in Counter(r.topic for r in records).items():
            metrics.EVENTS_CONSUMED.labels(topic).inc(count)
        try:
            # land is idempotent (what is landed is skipped), so a catalog or storage outage is retried whole
            for attempt in retrying(
                "landing a batch in bronze", budget_s=LAND_RETRY_S, before_sleep=_count_retry
            ):
                with attempt:
                    result = self.writer.land(records)
        except Exception:
            metrics.ERRORS.labels("ingest", "bronze_commit").inc()
            raise
        metrics.BRONZE_COMMIT_DURATION.observe(time.monotonic() - started)
        now_s = time.time()
        for topic, count in result.landed.items():
            metrics.EVENTS_LANDED.labels(topic).inc(count)
        for topic, count in result.skipped.items():
            if count:
                metrics.EVENTS_SKIPPED.labels(topic).inc(count)
        for rejection in result.quarantined:
            metrics.EVENTS_QUARANTINED.labels(rejection.topic, str(rejection.reason)).inc()
        for source_ts in result.source_ts.values():
            metrics.observe_freshness("bronze", source_ts, now_s)
        metrics.LAST_SUCCESS.labels("ingest").set(now_s)
        if self.audit is not None:  # after the bronze commit; never raises (cdcwh.audit.writer)
            self.audit.record_from(
                lambda: landing_rows(
                    ((r.topic, r.partition, r.offset) for r in records),
                    rows_in=len(records),
                    landed=sum(result.landed.values()),
                    rejections=result.quarantined,
                    rejected=result.rejected,
                    started=started_at,
                    finished=datetime.now(UTC),
                )
            )
        if self._data_dir is not None:  # a crash test's window between the Iceberg and the Kafka commit
            faults.hit(faults.LANDED, self._data_dir, note=str(len(records)))
        if self.maintenance is not None and time.monotonic() >= self._next_maintenance:
            # between checkpoints: the Kafka offsets of this batch are committed right after flush returns
            maintain_all(self.writer.catalog, self.writer.namespace, self.maintenance)
            self._next_maintenance = time.monotonic() + self.maintenance.maintain_interval_s
        log.info(
            "landed %d, skipped %d, quarantined %d of %d records in %.2fs",
            sum(result.landed.values()),
            sum(result.skipped.values()),
            len(result.quarantined),
            len(records),
            time.monotonic() - started,
        )

    def on_paused(self) -> None:
        self._buffer.clear()


def _count_retry(error: BaseException, wait: float) -> None:
    metrics.ERRORS.labels("ingest", metrics.error_kind(error)).inc()


def matching_topics(settings: Settings) -> dict[str, int]:
    """Topics matching CDCWH_KAFKA__TOPICS (minus DLQs and cdcwh's own), with their partition counts."""
    pattern = re.compile(settings.kafka.topics)
    topics = AdminClient(client_config(settings)).list_topics(timeout=10).topics
    return {
        name: len(topics[name].partitions)
        for name in sorted(topics)
        if pattern.search(name)
        and not name.endswith(DLQ_SUFFIX)
        and not name.startswith((settings.kafka.gold_topic_prefix + ".", "__"))
    }


def ingest_group(settings: Settings) -> str:
    return f"{settings.kafka.group_prefix}-ingest"


def build_app(
    settings: Settings, topics: list[str], sink: BronzeSink, tracker: CatchUpTracker, stats_interval_ms: int
) -> Application:
    group = ingest_group(settings)
    client = client_config(settings)
    consumer_extra = {
        k: v
        for k, v in consumer_config(settings, group).items()
        if k not in {"bootstrap.servers", "group.id"}
    }
    consumer_extra.update(
        {"statistics.interval.ms": stats_interval_ms, "stats_cb": tracker.on_stats, "client.id": group}
    )
    consumer_extra.pop("enable.auto.commit", None)
    app = Application(
        broker_address=client["bootstrap.servers"],
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=settings.ingest.commit_interval_s,
        commit_every=settings.ingest.commit_records,
        consumer_extra_config=consumer_extra,
        producer_extra_config={k: v for k, v in client.items() if k != "bootstrap.servers"},
        state_dir=str(settings.data_dir / "quixstreams"),
        auto_create_topics=False,
        use_changelog_topics=False,
    )
    for name in topics:
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        app.dataframe(topic).sink(sink)
    return app


def make_writer(settings: Settings) -> IcebergBronzeWriter:
    return IcebergBronzeWriter(
        open_catalog(settings),
        settings.iceberg.namespace,
        load_contracts(settings.contracts_path),
        max_value_bytes=settings.ingest.max_value_bytes,
        dead_letters=KafkaDeadLetterPublisher(
            client_config(settings), max_value_bytes=settings.ingest.dlq_max_value_bytes
        ),
        snapshots_kept=settings.iceberg.snapshots_kept,
        probe=KafkaRecordProbe(consumer_config(settings, ingest_group(settings))),
        registry=RegistrySchemas(settings.schema_registry),
    )


def run_ingest(
    settings: Settings,
    *,
    until_caught_up: bool = False,
    idle_s: float = 1.0,
    stopping: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT or ``stopping`` (exit 0 after the final checkpoint), or until the topics are
    drained."""
    if stopping is None:
        stopping = threading.Event()
    stop_on_signals(stopping, "stopping after the current checkpoint")
    # Arrow's default jemalloc pool keeps freed batches mapped; the system allocator hands them back, which
    # lowers the plateau RSS of a catch-up at the same rate (measured: docs/benchmarks.md, "Memory")
    pa.set_memory_pool(pa.system_memory_pool())
    gc.set_threshold(*GC_THRESHOLDS)
    sink = BronzeSink(
        make_writer(settings),
        data_dir=settings.data_dir,
        maintenance=settings.iceberg,
        audit=BufferedAuditWriter.from_settings("ingest", settings),
    )
    try:
        return ingest_topics(
            settings, sink, until_caught_up=until_caught_up, idle_s=idle_s, stopping=stopping
        )
    finally:
        if sink.audit is not None:  # a last try for audit rows still pending; counts what is lost
            sink.audit.close()
        try:
            sink.writer.close()
        except Exception:  # best effort: never in place of what ended the run
            log.warning("closing the record probe failed", exc_info=True)


def ingest_topics(
    settings: Settings,
    sink: BronzeSink,
    *,
    until_caught_up: bool,
    idle_s: float,
    stopping: threading.Event | None = None,
) -> int:
    """Subscribe to the matching topics and land them through ``sink``, resubscribing when they change, until
    ``stopping`` is set (then exit 0 after the final checkpoint)."""
    if stopping is None:
        stopping = threading.Event()
    while not stopping.is_set():
        topics = matching_topics(settings)
        if not topics:
            if until_caught_up:
                log.info("no topic matches %s: nothing to ingest", settings.kafka.topics)
                return 0
            log.info("waiting for topics matching %s", settings.kafka.topics)
            stopping.wait(settings.ingest.topic_refresh_s)
            continue
        group = ingest_group(settings)
        if until_caught_up and consumed_to_end(consumer_config(settings, group), group, topics):
            log.info("every partition of the %d topics is landed to its end: nothing to ingest", len(topics))
            return 0
        log.info("ingesting %d topics: %s", len(topics), ", ".join(topics))
        tracker = CatchUpTracker(group, expected_partitions=sum(topics.values()))
        interval = CATCH_UP_STATS_INTERVAL_MS if until_caught_up else STATS_INTERVAL_MS
        app = build_app(settings, list(topics), sink, tracker, interval)
        # SIGTERM and SIGINT set ``stopping`` (run_ingest's handlers, one pair for the whole process).
        # quixstreams installs its own at every run(), bound to that application: a signal arriving while
        # the service resubscribes then reached the old, stopped application and was lost (seen: `cdcwh run`
        # stopped mid-resubscribe waited out its 30 s and killed ingest).
        app._setup_signal_handlers = lambda: None  # type: ignore[method-assign]
        if stopping.is_set():  # stopped since the loop began: no group join only to leave it at once
            return 0
        watcher: CatchUpWatcher | TopicWatcher
        if until_caught_up:
            watcher = CatchUpWatcher(tracker, idle_s, app.stop)
        else:
            watcher = TopicWatcher(settings, list(topics), app.stop, tracker)
        relay = StopRelay(stopping, app.stop)
        watcher.start()
        relay.start()
        try:
            app.run()
        finally:
            watcher.stop()
            relay.stop()
        if stopping.is_set() or isinstance(watcher, CatchUpWatcher) or not watcher.changed:
            return 0
        log.info("the set of matching topics changed: resubscribing")
    return 0


class StopRelay(threading.Thread):
    """Stops the running application once ``stopping`` is set. ``Application.run`` forgets a ``stop()`` that
    comes before it starts polling, so the stop is repeated until the relay itself is stopped (when ``run``
    has returned)."""

    def __init__(self, stopping: threading.Event, stop_app: Callable[[], None]) -> None:
        super().__init__(name="cdcwh-stop-relay", daemon=True)
        self.stopping = stopping
        self.stop_app = stop_app
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            if self.stopping.is_set():
                self.stop_app()

    def stop(self) -> None:
        self._done.set()


class CatchUpWatcher(threading.Thread):
    """Stops the app once every assigned partition has been consumed to its end and stayed so for idle_s."""

    def __init__(self, tracker: CatchUpTracker, idle_s: float, on_done: Callable[[], None]) -> None:
        super().__init__(name="cdcwh-catch-up", daemon=True)
        self.tracker = tracker
        self.idle_s = idle_s
        self.on_done = on_done
        self._stopping = threading.Event()

    def run(self) -> None:
        since: float | None = None
        next_report = time.monotonic() + 30
        while not self._stopping.wait(0.1):
            if not self.tracker.caught_up():
                since = None
                if time.monotonic() > next_report:
                    log.info("catching up: %s", self.tracker.describe())
                    next_report = time.monotonic() + 30
                continue
            since = since or time.monotonic()
            if time.monotonic() - since >= self.idle_s:
                log.info("caught up with every assigned partition")
                self.on_done()
                return

    def stop(self) -> None:
        self._stopping.set()


class TopicWatcher(threading.Thread):
    """Stops the app when the topics matching the regex change, so the service resubscribes.

    Not before the consumer has finished joining its group, as shown by two statistics in a row that
    arrived after the change was seen: a member closed halfway through its join is not dropped by the
    embedded broker's coordinator, and the group then never assigns a new member (reproduced: a consumer
    closed within about a second of a broker restart, while it rejoins, wedges its group for more than 90 s,
    and a new consumer retrying every 8 s does not unstick it). A topic change after a broker restart is the
    usual case, and the statistics from before the restart still say 'steady'."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        on_change: Callable[[], None],
        tracker: CatchUpTracker | None = None,
    ) -> None:
        super().__init__(name="cdcwh-topic-watcher", daemon=True)
        self.settings = settings
        self.topics = topics
        self.on_change = on_change
        self.tracker = tracker
        self.changed = False
        # set when a change is seen, before waiting for the join: the tests wait on it to know the watcher
        # saw their topic change (the service itself reads only ``changed``)
        self.noticed = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.settings.ingest.topic_refresh_s):
            try:
                current = list(matching_topics(self.settings))
            except Exception as exc:  # a transient metadata error must not kill the service
                log.warning("topic refresh failed: %s", exc)
                continue
            if current != self.topics:
                deadline = time.monotonic() + JOIN_WAIT_S
                seen = self.tracker.updates if self.tracker is not None else 0
                self.noticed.set()
                while (
                    self.tracker is not None
                    and not self.tracker.steady_since(seen)
                    and time.monotonic() < deadline
                ):
                    if self._stopping.wait(0.2):
                        return
                self.changed = True
                self.on_change()
                return

    def stop(self) -> None:
        self._stopping.set()
