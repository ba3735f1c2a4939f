"""Run the services inside the test process, through the same entry points the CLI calls.

A ``python -m cdcwh.cli`` subprocess pays the imports (seconds on a loaded 2-core machine) before it joins
its consumer group; in-process the imports are paid once per worker. What the CLI adds on top of these
entry points (argument parsing, logging set-up, the metrics endpoint, exit codes) is covered by the few true
CLI tests in tests/e2e and the SIGKILL tests, which stay subprocesses because they guard crash guarantees.

The services set process-global state that a long-lived test process must not keep:
- quixstreams installs SIGINT/SIGTERM handlers when its application runs (so would a service's
  ``run_forever``); they are put back, so Ctrl-C and pytest-timeout still reach pytest.
- ingest raises the garbage collector's thresholds and swaps Arrow's memory pool; both are put back.
- the Prometheus registry is process-wide: tests that read a metric compare it before and after.
Fault-injection hooks stay environment variables read by the services; a test that needs one sets it with
``monkeypatch.setenv`` or, for the crash tests, runs the CLI as a subprocess.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from cdcwh.config import Settings

# Seconds every partition must stay at its end before an until-caught-up run returns. The CLI's default
# (1 s) allows for slow statistics; in-process the statistics arrive every 250 ms on the same machine.
IDLE_S = 0.5

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def process_state_restored() -> Iterator[None]:
    """Put back the signal handlers, gc thresholds and Arrow memory pool a service changes."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS} if main else {}
    thresholds = gc.get_threshold()
    pool = pa.default_memory_pool()
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        gc.set_threshold(*thresholds)
        pa.set_memory_pool(pool)


def ingest_until_caught_up(settings: Settings, *, idle_s: float = IDLE_S) -> None:
    """``cdcwh ingest --until-caught-up``: land everything in the matching topics, then return."""
    from cdcwh.ingest.service import run_ingest

    # quixstreams installs its signal handlers when the application runs, which Python allows only there
    assert threading.current_thread() is threading.main_thread(), "run ingest in the main thread"
    with process_state_restored():
        assert run_ingest(settings, until_caught_up=True, idle_s=idle_s) == 0


def transform_once(settings: Settings) -> None:
    """``cdcwh transform --once``: batches until bronze has nothing new."""
    from cdcwh.transform.service import TransformService

    with process_state_restored():
        assert TransformService(settings).run_once() == 0


def sink_until_caught_up(settings: Settings, *, idle_s: float = IDLE_S) -> None:
    """``cdcwh sink --until-caught-up``: apply everything in the gold topics to PostgreSQL, then return."""
    from cdcwh.sink.service import run_sink

    with process_state_restored():
        assert run_sink(settings, until_caught_up=True, idle_s=idle_s) == 0


def ingest_and_transform(settings: Settings) -> None:
    ingest_until_caught_up(settings)
    transform_once(settings)


def with_overrides(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with fields of its sections replaced, e.g. ``transform={"hold_s": 0}``: what
    an ``CDCWH_TRANSFORM__HOLD_S`` variable does for the CLI."""
    values = settings.model_dump(by_alias=True)
    for section, fields in sections.items():
        values[section] = {**values[section], **fields}
    return Settings(**values)


def run_in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``target`` in a daemon thread; the list receives what it raised, for the test to re-raise."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised by the test that joins the thread
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors
