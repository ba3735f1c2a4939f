"""The transform service: micro-batches every ``CDCWH_TRANSFORM__INTERVAL_S`` seconds until SIGTERM/SIGINT.

Each batch first publishes any outbox rows a previous crash left behind, runs ``batch.run_batch`` and
publishes its changes. The DuckDB file stays open across batches while they keep finding new rows, for up to
``CDCWH_TRANSFORM__HOLD_S``: closing it checkpoints it, which done after every batch took a fifth of a busy
transform's time. It is closed when a batch finds nothing new, when the hold time is up (then the next batch
waits a moment, so that ``cdcwh query`` and ``cdcwh status`` get their turn), after a failure, and on stop.
A failed batch is rolled back, recorded in ``cdcwh.batches`` and retried with back-off. A failed gold model
does not fail the batch (batch.py): it is logged, recorded and retried by every later batch. After each
step, ``TransformAudit`` profiles, detects anomalies and ships audit rows (cdcwh.audit.transform).
"""

from __future__ import annotations

import logging
import threading
import time

import duckdb

from cdcwh import faults, metrics
from cdcwh.audit.transform import TransformAudit
from cdcwh.bronze.catalog import open_catalog
from cdcwh.config import Settings
from cdcwh.kafka import client_config
from cdcwh.models import load_models
from cdcwh.quality.runner import ensure_tables, observe, record_results, run_tests
from cdcwh.quality.spec import load_tests
from cdcwh.retry import retrying
from cdcwh.stopping import stop_on_signals
from cdcwh.transform.batch import BatchResult, run_batch
from cdcwh.transform.outbox import KafkaOutboxPublisher
from cdcwh.warehouse import open_warehouse

log = logging.getLogger(__name__)

# after releasing the file, the next batch waits at least this long: readers retry every 0.1 s
RELEASE_GAP_S = 0.3
RETRY_FAILED_S = 30.0


class TransformService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = open_catalog(settings)
        self.models = load_models(settings.sql_path / "gold")
        # the data quality tests beside the models, validated at start (a wrong file stops it here)
        self.tests = load_tests(settings.sql_path)
        self._next_full_run = time.monotonic() + settings.quality.full_interval_s
        self.publisher = KafkaOutboxPublisher(
            client_config(settings),
            topic_prefix=settings.kafka.gold_topic_prefix,
            partitions=settings.transform.gold_partitions,
        )
        self.stopping = threading.Event()
        self.audit = TransformAudit(settings)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0
        # the first batch of the process retries the gold models behind even when bronze has nothing new: an
        # operator who fixed a failing model and restarted the service sees it catch up without new changes
        self._retry_behind = True
        self._next_retry = 0.0

    @property
    def holds_warehouse(self) -> bool:
        return self._con is not None

    def release(self) -> None:
        """Close the DuckDB file (checkpointing it), so that other processes can open it."""
        if self._con is not None:
            con, self._con = self._con, None
            con.close()

    def _warehouse(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = open_warehouse(self.settings)
            self._opened_at = time.monotonic()
        return self._con

    def step(self) -> BatchResult:
        """Publish leftovers, run one batch, publish its changes."""
        started = time.monotonic()
        try:
            # every model's topic before its first change: a sink subscribed by regex then finds them all at
            # once (each topic that appears later costs it a consumer-group rebalance, seconds on Tansu)
            self.publisher.ensure_topics({model.name for model in self.models})
            con = self._warehouse()
            self.publisher.publish(con)
            result = run_batch(
                self.settings,
                con,
                self.catalog,
                self.models,
                max_offsets_per_partition=self.settings.transform.max_offsets_per_partition,
                before_commit=lambda: faults.hit(faults.BEFORE_COMMIT, self.settings.data_dir),
                retry_behind=self._retry_behind or time.monotonic() >= self._next_retry,
                tests=self.tests,
            )
            # failed tables and models behind are retried by a batch that runs anyway; without new rows
            # elsewhere, every RETRY_FAILED_S (a one-table deployment, or a storage error that failed every
            # table at once, would otherwise wait for the next restart)
            self._retry_behind = False
            self._next_retry = time.monotonic() + RETRY_FAILED_S
            if result.gold_changes:
                faults.hit(faults.BEFORE_PUBLISH, self.settings.data_dir)
            published = self.publisher.publish(con)
            self._full_run(con)
        except BaseException:
            self.release()
            raise
        # after the commit: profiles, anomalies and the audit rows shipped to PostgreSQL (never raises)
        self.audit.after_batch(con, result.batch_id)
        held = time.monotonic() - self._opened_at
        if result.batch_id is None or held >= self.settings.transform.hold_s:
            self.release()
        if result.batch_id is not None:
            metrics.TRANSFORM_BATCH_DURATION.observe(time.monotonic() - started)
            log.info(
                "batch %d: %d bronze rows, %d silver changes, %d gold changes (%d published) in %.2fs",
                result.batch_id,
                result.bronze_rows,
                sum(result.silver.values()),
                result.gold_changes,
                published,
                time.monotonic() - started,
            )
            for name, error in result.failed.items():
                if name in result.held:
                    continue  # logged by the batch, with its failing tests
                log.error(
                    "batch %d: gold.%s failed and is behind, retried next batch: %s",
                    result.batch_id,
                    name,
                    error,
                )
            for name, why in result.skipped.items():
                log.warning("batch %d: gold.%s skipped (%s), behind", result.batch_id, name, why)
        metrics.LAST_SUCCESS.labels("transform").set(time.time())
        return result

    def _full_run(self, con: duckdb.DuckDBPyConnection) -> None:
        """Every ``CDCWH_QUALITY__FULL_INTERVAL_S``: every test in full, recorded (not a gate: the batches
        gate; this finds what batch scope cannot, such as a dimension row deleted under an old fact row)."""
        interval = self.settings.quality.full_interval_s
        if not interval or not self.tests or time.monotonic() < self._next_full_run:
            return
        self._next_full_run = time.monotonic() + interval
        results = run_tests(con, self.tests, run_id=f"full:{int(time.time() * 1000)}")
        ensure_tables(con)
        record_results(con, results)
        observe(results)
        failing = [r for r in results if r.status != "pass"]
        for r in failing:
            log.log(
                logging.ERROR if r.status == "fail" else logging.WARNING,
                "data quality: %s %s (%d failing rows)",
                r.status.upper(),
                r.test_id,
                r.failing_rows,
            )

    def run_once(self) -> int:
        """Batches until bronze has nothing new."""
        try:
            while self.step().batch_id is not None:
                pass
        finally:
            self.release()
            self.audit.close()
        return 0

    def run_forever(self) -> int:
        stop_on_signals(self.stopping)

        def pause(seconds: float) -> None:
            if self.stopping.wait(seconds):
                raise SystemExit(0)  # stopped while waiting to retry: nothing is half done

        def count(error: BaseException, wait: float) -> None:
            metrics.ERRORS.labels("transform", metrics.error_kind(error)).inc()

        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                # transient errors (a broker or the warehouse file briefly unavailable) are retried; a failing
                # model is isolated inside the batch; anything else stops the service with a one-line error
                for attempt in retrying("a transform batch", sleep=pause, before_sleep=count):
                    with attempt:
                        self.step()
                wait = self.settings.transform.interval_s - (time.monotonic() - started)
                if not self.holds_warehouse:
                    wait = max(wait, RELEASE_GAP_S)
                self.stopping.wait(max(0.0, wait))
        finally:
            self.release()
            self.audit.close()
        return 0
