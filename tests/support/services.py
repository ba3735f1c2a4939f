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

    # run_ingest installs its SIGTERM/SIGINT handlers, which Python allows only in the main thread
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


class RunningIngest:
    """The long-running ``cdcwh ingest`` in a thread of the test process (see ``ingest_running``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="test-ingest", daemon=True)

    def _run(self) -> None:
        from cdcwh.ingest.service import run_ingest

        try:
            run_ingest(self.settings, stopping=self.stopping)
        except BaseException as exc:  # reported by alive() and on stop
            self.errors.append(exc)

    def alive(self) -> bool:
        """Whether the service still runs; raises what it failed with."""
        if self.errors:
            raise AssertionError("the in-process ingest failed") from self.errors[0]
        return self.thread.is_alive()

    def stop(self, timeout_s: float = 60.0) -> None:
        """What SIGTERM does: the application stops after its final checkpoint."""
        self.stopping.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the in-process ingest did not stop"
        if self.errors:
            raise AssertionError("the in-process ingest failed") from self.errors[0]


@contextmanager
def ingest_running(settings: Settings) -> Iterator[RunningIngest]:
    """``cdcwh ingest`` (long-running, one consumer-group join for many rounds) in a thread, stopped on exit.

    Python lets only the main thread install signal handlers: the test sets the run's ``stopping``, as
    SIGTERM would."""
    running = RunningIngest(settings)
    with process_state_restored():
        running.thread.start()
        try:
            yield running
        finally:
            running.stop()


@contextmanager
def sink_running(settings: Settings) -> Iterator[Callable[[], bool]]:
    """The long-running ``cdcwh sink`` in a thread; yields ``alive()`` (raises what the sink failed with).
    On exit it is stopped as SIGTERM does (``SinkService.stopping``: after the current batch)."""
    from cdcwh.sink.service import SinkService

    service = SinkService(settings)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported by alive() and on exit
            errors.append(exc)

    def alive() -> bool:
        if errors:
            raise AssertionError("the in-process sink failed") from errors[0]
        return thread.is_alive()

    thread = threading.Thread(target=body, name="test-sink", daemon=True)
    thread.start()
    try:
        yield alive
    finally:
        service.stopping.set()
        thread.join(60)
        assert not thread.is_alive(), "the in-process sink did not stop"
        alive()
