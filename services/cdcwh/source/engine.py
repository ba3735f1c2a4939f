"""The Debezium engine (pydbzengine, JSON format) in a thread, relaying every batch to Kafka.

pydbzengine's change consumer calls ``handleJsonBatch(records)``, then ``markProcessed`` on each record and
``markBatchFinished``: the handler returns only once the batch is on the broker, so the offsets the engine
stores (FileOffsetBackingStore, flushed every second and at a clean stop) never run ahead of Kafka, and a
restart resumes without loss (a crash redelivers at most what was produced after the last stored offset).
When a batch fails, pydbzengine swallows the error after interrupting the engine; the handler then refuses
every later batch so none of them is marked, and ``CaptureEngine.run`` restarts the engine from its offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cdcwh import metrics
from cdcwh.backoff import RestartBackoff
from cdcwh.source.relay import KafkaRelay, Record

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 60.0


def _text(value: Any) -> bytes | None:
    return None if value is None else str(value).encode("utf-8")


def make_handler(relay: KafkaRelay) -> Any:
    """A ``BasePythonChangeHandler`` relaying batches; ``.failure`` holds the first error, sticky."""
    from pydbzengine import BasePythonChangeHandler

    class RelayHandler(BasePythonChangeHandler):
        failure: BaseException | None = None

        def handleJsonBatch(self, records: Any) -> None:  # noqa: N802 - the Java callback's name
            if self.failure is not None:
                raise RuntimeError(f"refusing a batch after an earlier failure: {self.failure}")
            try:
                batch: list[Record] = [
                    (str(record.destination()), _text(record.key()), _text(record.value()))
                    for record in records
                ]
                relay.send(batch)
            except BaseException as exc:
                self.failure = exc
                raise
            metrics.LAST_SUCCESS.labels("capture").set_to_current_time()

    return RelayHandler()


class CaptureEngine:
    """Runs the engine until ``stop`` is set, restarting it (with back-off) whenever it stops on its own."""

    def __init__(self, properties: dict[str, str], relay: KafkaRelay, log_path: str) -> None:
        self.properties = properties
        self.relay = relay
        self.log_path = log_path
        self.runs = 0

    def run(self, stop: threading.Event, on_started: Callable[[], None] | None = None) -> None:
        backoff = RestartBackoff()
        while not stop.is_set():
            started = time.monotonic()
            error = self._run_once(stop, on_started)
            if stop.is_set():
                return
            metrics.CAPTURE_RESTARTS.inc()
            metrics.ERRORS.labels("capture", metrics.error_kind(error) if error else "other").inc()
            wait = backoff.wait(time.monotonic() - started)
            log.error(
                "capture: the Debezium engine stopped (%s); restarting from its offsets in %.0f s (log: %s)",
                error or "no error reported",
                wait,
                self.log_path,
            )
            stop.wait(wait)

    def _run_once(self, stop: threading.Event, on_started: Callable[[], None] | None) -> BaseException | None:
        from pydbzengine import DebeziumEngine

        handler = make_handler(self.relay)
        engine = DebeziumEngine(properties=self.properties, handler=handler, format="json")
        errors: list[BaseException] = []

        def target() -> None:
            try:
                engine.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="debezium-engine", daemon=True)
        thread.start()
        self.runs += 1
        if on_started is not None:
            on_started()
        while thread.is_alive() and handler.failure is None and not stop.wait(0.5):
            pass
        engine.close()  # a clean stop: the engine commits the offsets of every batch marked processed
        thread.join(JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.warning("capture: the Debezium engine thread did not stop within %.0f s", JOIN_TIMEOUT_S)
        failure: BaseException | None = handler.failure
        return failure or (errors[0] if errors else None)
