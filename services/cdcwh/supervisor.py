"""``cdcwh run``: ingest, transform and sink (and capture, when a source is configured) as separate processes
under one supervisor.

The supervisor starts each service as ``python -m cdcwh.cli <service>``, restarts a child that exits with
back-off (1 s doubling to 30 s, reset after a minute of healthy running), and on SIGINT/SIGTERM sends SIGTERM
to every child (each flushes and commits), waits, then SIGKILLs stragglers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cdcwh import metrics
from cdcwh.backoff import RestartBackoff
from cdcwh.stopping import stop_on_signals

log = logging.getLogger(__name__)

SERVICES = ("ingest", "transform", "sink")
CAPTURE = "capture"
WITH_CAPTURE = (*SERVICES, CAPTURE)
"""The children when a source database is captured: the Debezium engine runs in its own process (one JVM)."""
MAX_BACKOFF_S = 30.0
# A child that exits sooner than this after its start is crash-looping (a bad setting, a dead dependency) and
# its restarts back off; one that ran longer is restarted after a second, whatever killed it.
CRASH_LOOP_S = 5.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: RestartBackoff = field(
        default_factory=lambda: RestartBackoff(first_s=1.0, max_s=MAX_BACKOFF_S, healthy_after_s=CRASH_LOOP_S)
    )
    next_start: float = 0.0
    log_path: Path | None = None
    exits: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self, log_dir: Path, env: dict[str, str] | None = None, services: tuple[str, ...] = SERVICES
    ):
        self.log_dir = log_dir
        self.env = env if env is not None else dict(os.environ)
        self.children = [Child(name, [sys.executable, "-m", "cdcwh.cli", name]) for name in services]
        self.stopping = threading.Event()

    def _start(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child.log_path = self.log_dir / f"{child.name}.log"
        with child.log_path.open("ab") as out:
            child.process = subprocess.Popen(  # noqa: S603 - our own CLI
                child.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        child.started_at = time.monotonic()
        log.info("started %s (pid %d), log in %s", child.name, child.process.pid, child.log_path)

    def start(self) -> None:
        """Start every child that is not running (so ``run_until_signal`` after ``start`` keeps them)."""
        for child in self.children:
            if child.process is None or child.process.poll() is not None:
                self._start(child)

    def check(self) -> None:
        """Restart children that exited (with back-off)."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.next_start and not self.stopping.is_set():
                    child.restarts += 1
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.exits.append(code)
            wait = child.backoff.wait(ran_for_s=now - child.started_at)
            metrics.ERRORS.labels(child.name, "exited").inc()
            log.warning(
                "%s exited with code %d; restarting in %.0fs (see %s)",
                child.name,
                code,
                wait,
                child.log_path,
            )
            child.process = None
            child.next_start = now + wait

    def stop(self) -> None:
        self.stopping.set()
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None  # noqa: S101 - narrowed above
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in running:
            assert child.process is not None  # noqa: S101 - narrowed above
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs: killing it", child.name, STOP_TIMEOUT_S)
                child.process.kill()
                child.process.wait()

    def run_until_signal(self, watch: Callable[[], None] | None = None) -> int:
        """Supervise until SIGINT/SIGTERM; ``watch`` is called every 2 s (the infrastructure's check)."""

        stop_on_signals(self.stopping, "stopping the services")
        self.start()
        next_watch = time.monotonic()
        try:
            while not self.stopping.wait(0.5):
                self.check()
                if watch is not None and time.monotonic() >= next_watch:
                    watch()
                    next_watch = time.monotonic() + 2.0
        finally:
            self.stop()
        return 0


Relay = Callable[[str], None]
"""Where a batch stage's output lines go besides its log file (``cdcwh run --until-caught-up``: stderr)."""
TAIL_LINES = 20


def run_stage(name: str, args: list[str], env: dict[str, str], log_dir: Path, relay: Relay | None) -> None:
    """Run one ``cdcwh`` batch command to completion, its output appended to ``<log_dir>/<name>.log`` and
    handed line by line to ``relay``; raise naming the log on failure (with its last lines when they were
    not relayed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    started = time.monotonic()
    log.info("%s: started, log in %s", name, path)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with (
        path.open("a", encoding="utf-8") as out,
        subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "cdcwh.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        ) as process,
    ):
        assert process.stdout is not None  # noqa: S101 - a pipe was asked for
        for line in process.stdout:
            out.write(line)
            out.flush()
            tail.append(line)
            if relay is not None:
                relay(line)
        code = process.wait()
    if code != 0:
        from cdcwh.errors import InfrastructureError

        last = "" if relay is not None else ":\n" + "".join(tail).rstrip()
        raise InfrastructureError(f"`cdcwh {' '.join(args)}` failed ({code}); its log is {path}{last}")
    log.info("%s: done in %.1fs", name, time.monotonic() - started)


def run_until_caught_up(env: dict[str, str], relay: Relay | None = None) -> None:
    """Everything currently in the topics through to Postgres: ingest, transform, sink, each to completion;
    their logs in ``<data_dir>/logs`` (``CDCWH_DATA_DIR`` of ``env``, which ``child_env`` makes absolute)."""
    log_dir = Path(env["CDCWH_DATA_DIR"]) / "logs"
    run_stage("ingest", ["ingest", "--until-caught-up"], env, log_dir, relay)
    run_stage("transform", ["transform", "--once"], env, log_dir, relay)
    run_stage("sink", ["sink", "--until-caught-up"], env, log_dir, relay)
