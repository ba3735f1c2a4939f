"""Shared by the benchmark sections: statistics, metrics scraping, the process watcher, the machine
description, the embedded services and the cdcwh child environment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from cdcwh.metrics import Samples
from cdcwh.metrics import scrape as scrape_metrics

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SECTIONS = ("ingest", "avro", "sink", "freshness", "rebuild", "soak", "api")
PY_SPY = Path(sys.executable).parent / "py-spy"  # pip install py-spy; else cProfile is used
STAGES = ("bronze", "gold", "postgres")  # cdcwh_freshness_seconds{stage} of ingest, transform, sink

console = Console()
log = Console(stderr=True)

# ----------------------------------------------------------------------------------------------- helpers


def summary(values: list[float]) -> dict[str, float | int | list[float]]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
        "values": values,
    }


def free_base_port() -> int:
    """A base port whose next three ports are free too (metrics of ingest, transform, sink, supervisor)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base < 65000 and all(_port_free(base + i) for i in range(4)):
            return base
    raise RuntimeError("no free port range for metrics")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def scrape(port: int) -> Samples:
    return scrape_metrics("127.0.0.1", port)


def metric_total(samples: Samples, name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile ``q`` of a cumulative Prometheus histogram, interpolated linearly inside its bucket (as
    PromQL's histogram_quantile does); resolution is therefore the bucket width."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return lower_le  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (target - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return None


class ProcessWatcher:
    """Polls a process tree: per name given by ``classify(process)`` (None: ignored), the summed RSS over
    time (its peak, and its peaks in the first and second half of the watch) and the CPU seconds used."""

    def __init__(self, pid: int, classify: Callable[[psutil.Process], str | None], interval_s: float = 0.1):
        self.root = psutil.Process(pid)
        self.classify = classify
        self.interval_s = interval_s
        self.timeline: dict[str, list[tuple[float, float]]] = {}  # name -> (seconds since start, MB)
        self._cpu: dict[int, tuple[str, float, float]] = {}  # pid -> (name, CPU s at first sight, latest)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProcessWatcher:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> dict[str, float]:
        return {name: max(mb for _, mb in points) for name, points in self.timeline.items()}

    def half_peaks_mb(self, name: str) -> tuple[float, float]:
        """Peak RSS in the first and in the second half of the watch: a process whose memory grows with the
        backlog it has read peaks later; a bounded one peaks early (prefetch and first batch) and levels."""
        points = self.timeline.get(name, [])
        if not points:
            return 0.0, 0.0
        middle = points[-1][0] / 2
        first = [mb for t, mb in points if t <= middle] or [0.0]
        second = [mb for t, mb in points if t > middle] or [0.0]
        return max(first), max(second)

    @property
    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) used while watched, per name."""
        totals: dict[str, float] = {}
        for name, first, latest in self._cpu.values():
            totals[name] = totals.get(name, 0.0) + latest - first
        return totals

    def _run(self) -> None:
        # the process tree and each process's name are looked up once a second, not on every poll: psutil
        # scans /proc for children, and the watcher's CPU counts as the bench process's (the load generator)
        names: dict[psutil.Process, str | None] = {}
        polls = 0
        while not self._stop.is_set():
            if polls % max(1, round(1.0 / self.interval_s)) == 0:
                try:
                    tree = [self.root, *self.root.children(recursive=True)]
                except psutil.Error:
                    return
                names = {proc: names[proc] if proc in names else self._classify(proc) for proc in tree}
            polls += 1
            now = time.monotonic() - self._started
            rss: dict[str, float] = {}
            for proc, name in names.items():
                if name is None:
                    continue
                try:
                    with proc.oneshot():
                        rss[name] = rss.get(name, 0.0) + proc.memory_info().rss / 2**20
                        times = proc.cpu_times()
                except psutil.Error:
                    continue
                used = times.user + times.system
                first = self._cpu.get(proc.pid, (name, used, used))[1]
                self._cpu[proc.pid] = (name, first, used)
            for name, mb in rss.items():
                self.timeline.setdefault(name, []).append((now, mb))
            self._stop.wait(self.interval_s)

    def _classify(self, proc: psutil.Process) -> str | None:
        try:
            return self.classify(proc)
        except psutil.Error:
            return None


def service_of(proc: psutil.Process) -> str | None:
    """ingest / transform / sink for a cdcwh service process (its command line), else None."""
    cmd = proc.cmdline()
    if "cdcwh.cli" not in " ".join(cmd) and not any(c.endswith("/cdcwh") for c in cmd):
        return None
    for name in ("ingest", "transform", "sink"):
        if name in cmd:
            return name
    return None


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("cdcwh", "duckdb", "pyarrow", "pyiceberg", "confluent-kafka", "psycopg", "quixstreams"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------- environment


@dataclass
class Bench:
    """The embedded services of this run and the environment of the cdcwh processes started on them."""

    root: Path
    pg_dsn: str
    args: argparse.Namespace
    pg_pid: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    _count: int = 0

    def env(self, bootstrap: str, name: str) -> dict[str, str]:
        """A cdcwh child environment: a fresh data dir and consumer groups, the given broker, our Postgres."""
        self._count += 1
        data_dir = self.root / f"{name}-{self._count}"
        data_dir.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDCWH_")}
        env.update(
            CDCWH_DATA_DIR=str(data_dir),
            CDCWH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
            CDCWH_KAFKA__GROUP_PREFIX=f"bench-{name}-{self._count}",
            CDCWH_KAFKA__SESSION_TIMEOUT_MS="6000",
            CDCWH_KAFKA__HEARTBEAT_INTERVAL_MS="500",
            CDCWH_POSTGRES__DSN=self.pg_dsn,
            CDCWH_METRICS__PORT=str(free_base_port()),
            CDCWH_LOG_LEVEL="INFO",
        )
        return env


@contextlib.contextmanager
def settings_from(env: dict[str, str]) -> Iterator[Any]:
    """cdcwh Settings loaded from ``env`` (os.environ is swapped while loading only)."""
    from cdcwh.config import load_settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield settings


@contextlib.contextmanager
def broker(root: Path, name: str) -> Iterator[str]:
    """A fresh embedded broker (memory-only) for one section; yields its bootstrap address."""
    from cdcwh.embedded import EmbeddedBroker

    run_dir = root / f"broker-{name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(run_dir, run_dir / "logs") as embedded:
        record = embedded.record
        if record is None:
            raise RuntimeError(f"the embedded broker of bench section {name} has no run record")
        BROKER_PIDS[embedded.address] = record.pid
        yield embedded.address


BROKER_PIDS: dict[str, int] = {}  # bootstrap address -> broker pid, for CPU accounting


def tree_cpu_s(pid: int | None, *, children: bool = True) -> float:
    """CPU seconds (user + system) used so far by a process and (unless told not to) its living children."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *(root.children(recursive=True) if children else [])]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def cdcwh_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cdcwh.cli", *args]


def prefill(env: dict[str, str], events: int, seed: int, rate: float | None = None) -> int:
    """Produce ``events`` generated Debezium JSON change events; returns the Kafka records sent."""
    from cdcwh.commands.generate import produce_workload

    create_topics(env)
    with settings_from(env) as settings:
        return produce_workload(settings, events=events, seed=seed, rate=rate, counts={})


def create_topics(env: dict[str, str]) -> None:
    """The shop topics, 3 partitions each (as ``cdcwh demo`` creates them before ingest subscribes)."""
    from confluent_kafka.admin import AdminClient

    from cdcwh.generate import SHOP_TABLES
    from cdcwh.kafka import client_config, ensure_topics

    with settings_from(env) as settings:
        ensure_topics(AdminClient(client_config(settings)), [f"shop.public.{t}" for t in SHOP_TABLES], 3)
