"""The benchmark sections, each on embedded services started here, in a fresh data dir under a tmp dir.

Sections: ingest (vs a raw confluent-kafka consume), sink (vs a raw COPY), freshness (steady load through
``cdcwh run``), rebuild (silver+gold from bronze) and the peak RSS of every service process measured on the
way. Each figure is the median of ``--runs`` runs, with min and max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from cdcwh.metrics import Samples
from cdcwh.metrics import scrape as scrape_metrics

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SECTIONS = ("ingest", "sink", "freshness", "rebuild")
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


class RssWatcher:
    """Polls the RSS of a process tree; peak per name given by ``classify(process)`` (None: ignored)."""

    def __init__(self, pid: int, classify: Callable[[psutil.Process], str | None], interval_s: float = 0.1):
        self.root = psutil.Process(pid)
        self.classify = classify
        self.interval_s = interval_s
        self.peak_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def __enter__(self) -> RssWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    name = self.classify(proc)
                    if name is not None:
                        mb = proc.memory_info().rss / 2**20
                        self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mb)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval_s)


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
    versions = {}
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
        yield embedded.address


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


# ---------------------------------------------------------------------------------------------- ingest


def raw_consume(bootstrap: str, expected: int) -> tuple[int, float]:
    """Read every record of the shop topics to EOF with a plain confluent-kafka Consumer: (records, s)."""
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    topics = [t for t in consumer.list_topics(timeout=10).topics if t.startswith("shop.")]
    partitions = sum(len(consumer.list_topics(t, timeout=10).topics[t].partitions) for t in topics)
    consumer.subscribe(topics)
    count, at_eof, start = 0, set(), None
    try:
        while len(at_eof) < partitions or count < expected:
            messages = consumer.consume(10_000, timeout=1.0)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_eof.add((message.topic(), message.partition()))
                        continue
                    raise RuntimeError(f"raw consume: {error}")
                if start is None:
                    start = time.perf_counter()  # from the first record: group join is not throughput
                count += 1
                len(message.value() or b"")  # touch the payload, as any consumer must
    finally:
        consumer.close()
    return count, time.perf_counter() - (start or time.perf_counter())


LANDED = re.compile(r"landed (\d+), skipped (\d+), quarantined (\d+) of (\d+) records in ([\d.]+)s")


def run_ingest(env: dict[str, str], records: int, profile: Path | None = None) -> dict[str, float]:
    """``cdcwh ingest --until-caught-up`` as a subprocess, its log read line by line as it is written.

    Rate: records of all batches but the first over the time from the first batch's log line to the last's,
    so process start-up and group join are excluded (the batch mode serves no /metrics). Also: wall-clock
    seconds including start-up, the seconds the batches themselves report, peak RSS."""
    cmd = cdcwh_cmd("ingest", "--until-caught-up", "--idle-seconds", "0.5")
    if profile is not None and profile.suffix == ".svg":  # py-spy flame graph of the ingest process
        cmd = [str(PY_SPY), "record", "--subprocesses", "-r", "50", "-o", str(profile), "--", *cmd]
    elif profile is not None:  # no py-spy: cProfile stats (read with python -m pstats, or snakeviz)
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "cdcwh.cli", *cmd[3:]]
    log_path = Path(env["CDCWH_DATA_DIR"]) / "ingest.log"
    batches: list[tuple[float, int, int, float]] = []  # (seen at, events landed, records, batch seconds)
    start = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 (our own CLI / py-spy on it)
            cmd, env={**env, "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None  # noqa: S101 (PIPE above)
        with RssWatcher(proc.pid, lambda p: "ingest" if service_of(p) else None) as rss:
            for line in proc.stdout:
                out.write(line)
                if match := LANDED.search(line):
                    landed, _, _, count, seconds = match.groups()
                    batches.append((time.perf_counter(), int(landed), int(count), float(seconds)))
            proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"cdcwh ingest exited {proc.returncode}; see {log_path}")
    landed_total = sum(b[1] for b in batches)
    records_total = sum(b[2] for b in batches)
    result = {
        "wall_s": wall,
        "records_per_s_wall": records / wall,
        "peak_rss_mb": rss.peak_mb.get("ingest", 0),
        "events_landed": landed_total,
        "records_consumed": records_total,
        "batches": len(batches),
        "batch_seconds_total": sum(b[3] for b in batches),
    }
    if landed_total == 0:
        raise RuntimeError(f"cdcwh ingest logged no landed batch; see {log_path}")
    if len(batches) >= 2:
        span = batches[-1][0] - batches[0][0]
        result["events_per_s"] = sum(b[1] for b in batches[1:]) / span
    else:  # one batch: only the wall clock is left
        result["events_per_s"] = landed_total / wall
    # Kafka records (tombstones included, which the batch log does not count) at the same pace as the events,
    # to compare with the raw consume of the same records
    result["records_per_s"] = result["events_per_s"] * records / landed_total
    return result


def bench_ingest(bench: Bench) -> Path | None:
    args = bench.args
    raw, ingest, envs = [], [], []
    with broker(bench.root, "ingest") as bootstrap:
        env = bench.env(bootstrap, "prefill")
        log.print(f"[bold]ingest[/]: producing {args.events:,} change events to {bootstrap} ...")
        t0 = time.perf_counter()
        records = prefill(env, args.events, args.seed)
        log.print(f"  {records:,} Kafka records in {time.perf_counter() - t0:.1f}s")
        for i in range(args.runs):
            count, seconds = raw_consume(bootstrap, records)
            raw.append(count / seconds)
            log.print(f"  run {i + 1}: raw consume {count:,} records in {seconds:.2f}s = {raw[-1]:,.0f}/s")
            env = bench.env(bootstrap, "ingest")
            result = run_ingest(env, records)
            ingest.append(result)
            envs.append(env)
            log.print(
                f"  run {i + 1}: ingest {result['records_per_s']:,.0f} records/s "
                f"({result['wall_s']:.1f}s wall incl. start-up), peak RSS {result['peak_rss_mb']:.0f} MB"
            )
        profile = None
        # ingest is always profiled in auto mode: its time is Python CPU, which py-spy sees; the sink's is
        # mostly Postgres server time, which a client-side profile does not show
        if args.profile in ("ingest", "auto"):
            profile = BENCH_DIR / "profiles" / ("ingest.svg" if PY_SPY.exists() else "ingest.prof")
            profile.parent.mkdir(exist_ok=True)
            log.print(f"  profiling one more ingest run (not counted) -> {profile}")
            try:
                run_ingest(bench.env(bootstrap, "ingest-profile"), records, profile=profile)
            except (RuntimeError, OSError) as exc:
                log.print(f"  [yellow]profile failed: {exc}")
                profile = None
        if "rebuild" in args.only:
            bench_rebuild(bench, envs[-1])
    rates = [r["records_per_s"] for r in ingest]
    bench.results["ingest"] = {
        "change_events": args.events,
        "kafka_records": records,
        "raw_consume_records_per_s": summary(raw),
        "ingest_records_per_s": summary(rates),
        "ingest_events_per_s": summary([r["events_per_s"] for r in ingest]),
        "ingest_wall_s_incl_startup": summary([r["wall_s"] for r in ingest]),
        "ratio": summary([r / w for r, w in zip(rates, raw, strict=True)]),
        "peak_rss_mb": summary([r["peak_rss_mb"] for r in ingest]),
        "profile": str(profile.relative_to(ROOT)) if profile else None,
        "per_run": ingest,
    }
    return profile


# --------------------------------------------------------------------------------------------- rebuild


def bench_rebuild(bench: Bench, env: dict[str, str]) -> None:
    """transform --once on the ingested bronze, then time ``rebuild`` of silver and gold, each run in its own
    process (bench/_rebuild.py: the time is measured inside it, so start-up is excluded)."""
    log.print("[bold]rebuild[/]: transform --once on the ingested bronze ...")
    subprocess.run(cdcwh_cmd("transform", "--once"), env=env, check=True, capture_output=True)  # noqa: S603 (our own CLI)
    seconds, peak = [], []
    for i in range(bench.args.runs):
        proc = subprocess.Popen(  # noqa: S603 (our own bench module)
            [sys.executable, "-m", "bench._rebuild"],
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        with RssWatcher(proc.pid, lambda p: "rebuild") as rss:
            out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"rebuild exited {proc.returncode}")
        result = json.loads(out.strip().splitlines()[-1])
        seconds.append(result["seconds"])
        peak.append(rss.peak_mb.get("rebuild", 0.0))
        log.print(
            f"  run {i + 1}: rebuilt {result['counts']} in {seconds[-1]:.2f}s, peak RSS {peak[-1]:.0f} MB"
        )
    events = bench.args.events
    bench.results["rebuild"] = {
        "change_events": events,
        "seconds": summary(seconds),
        "seconds_per_million_events": summary([s * 1_000_000 / events for s in seconds]),
        "peak_rss_mb": summary(peak),
        "note": "run 1 also publishes the gold changes transform --once left in the outbox",
    }


# ------------------------------------------------------------------------------------------------ sink


def order_rows(count: int, version: int) -> list[dict[str, Any]]:
    statuses = ("pending", "paid", "shipped", "delivered", "cancelled")
    base = date(2024, 1, 1)
    rows = []
    for i in range(count):
        amount = Decimal(i % 50_000) / 100
        rows.append(
            {
                "order_id": i + 1,
                "customer_id": i % 10_000 + 1,
                "order_date": (base + timedelta(days=i % 365)).isoformat(),
                "status": statuses[i % 5],
                "credit_card_amount": str(amount),
                "coupon_amount": "0.00",
                "bank_transfer_amount": "0.00",
                "gift_card_amount": "0.00",
                "amount": str(amount),
                "_version": version,
            }
        )
    return rows


def profile_sink(bench: Bench) -> Path | None:
    """py-spy record of ``python -m bench --only sink --runs 1`` (the sink section in a child process)."""
    if not PY_SPY.exists():
        log.print("  [yellow]no py-spy in the venv (pip install py-spy): no sink profile")
        return None
    profile = BENCH_DIR / "profiles" / "sink.svg"
    profile.parent.mkdir(exist_ok=True)
    log.print(f"  profiling one more sink run (not counted) -> {profile}")
    cmd = [str(PY_SPY), "record", "-r", "100", "-o", str(profile), "--", sys.executable, "-m", "bench",
           "--only", "sink", "--runs", "1", "--rows", str(bench.args.rows), "--profile", "none",
           "--output", str(bench.root / "sink-profile.json")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)  # noqa: S603 (py-spy on our own bench)
    if result.returncode != 0:
        log.print(f"  [yellow]sink profile failed: {result.stderr[-500:]}")
        return None
    return profile


def bench_sink(bench: Bench) -> None:
    import psycopg
    from psycopg import sql

    from cdcwh.sink.postgres import GoldChange, PostgresMartSink

    args = bench.args
    rows = args.rows
    batch = 20_000  # cdcwh.config.SinkSettings.batch_max_rows, the sink service's batch
    data = order_rows(rows, version=1)
    changes = [
        GoldChange(
            mart="orders",
            op="upsert",
            version=1,
            key=json.dumps({"order_id": r["order_id"]}),
            row=r,
            source_ts_ms=None,
        )
        for r in data
    ]
    columns = [c for c in data[0] if c != "_version"]
    sink_rates, raw_rates, update_rates = [], [], []
    for i in range(args.runs):
        schema = f"bench_sink_{i}"
        sink = PostgresMartSink(bench.pg_dsn, schema, ROOT / "sql")
        sink.connect()
        start = time.perf_counter()
        for at in range(0, rows, batch):
            sink.apply(changes[at : at + batch])
        sink_rates.append(rows / (time.perf_counter() - start))
        newer = [GoldChange(c.mart, c.op, 2, c.key, c.row, None) for c in changes]
        start = time.perf_counter()
        for at in range(0, rows, batch):
            sink.apply(newer[at : at + batch])
        update_rates.append(rows / (time.perf_counter() - start))
        sink.close()

        with psycopg.connect(bench.pg_dsn) as conn:
            raw = sql.Identifier(f"bench_raw_{i}", "orders")
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"bench_raw_{i}")))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    raw, sql.Identifier(schema, "orders")
                )
            )
            conn.commit()
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                raw, sql.SQL(", ").join(map(sql.Identifier, [*columns, "_version", "_updated_at"]))
            )
            start = time.perf_counter()
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in data:
                    copy.write_row([*(row[c] for c in columns), 1, "now"])
            conn.commit()
            raw_rates.append(rows / (time.perf_counter() - start))
        log.print(
            f"  run {i + 1}: sink insert {sink_rates[-1]:,.0f} rows/s, "
            f"sink update {update_rates[-1]:,.0f} rows/s, raw COPY {raw_rates[-1]:,.0f} rows/s"
        )
    bench.results["sink"] = {
        "rows": rows,
        "batch_rows": batch,
        "raw_copy_rows_per_s": summary(raw_rates),
        "sink_insert_rows_per_s": summary(sink_rates),
        "sink_update_rows_per_s": summary(update_rates),
        "ratio": summary([s / r for s, r in zip(sink_rates, raw_rates, strict=True)]),
        "ratio_update": summary([s / r for s, r in zip(update_rates, raw_rates, strict=True)]),
    }


# ------------------------------------------------------------------------------------------- freshness


def bench_freshness(bench: Bench) -> None:
    import psycopg

    args = bench.args
    quantiles: dict[str, dict[str, list[float]]] = {s: {"p50": [], "p95": [], "p99": []} for s in STAGES}
    peaks: dict[str, list[float]] = {}
    achieved = []
    for i in range(args.runs):
        with psycopg.connect(bench.pg_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS marts CASCADE")
        with broker(bench.root, f"freshness-{i}") as bootstrap:
            env = bench.env(bootstrap, "freshness")
            base = int(env["CDCWH_METRICS__PORT"])
            create_topics(env)
            out = (Path(env["CDCWH_DATA_DIR"]) / "run.log").open("w")
            proc = subprocess.Popen(cdcwh_cmd("run"), env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 (our own CLI)
            try:
                with RssWatcher(proc.pid, service_of) as rss:
                    deadline = time.monotonic() + 90
                    while not scrape(base).get("cdcwh_consumer_lag"):
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"cdcwh run did not start consuming; see {out.name}")
                        time.sleep(0.25)
                    events = int(args.rate * args.duration)
                    log.print(f"[bold]freshness[/] run {i + 1}: {events:,} events at {args.rate:,.0f}/s ...")
                    start = time.perf_counter()
                    prefill(env, events, args.seed + i, rate=args.rate)
                    achieved.append(events / (time.perf_counter() - start))
                    settle_deadline = time.monotonic() + 120
                    last, idle_since = -1.0, time.monotonic()
                    while time.monotonic() < settle_deadline:
                        rows = metric_total(scrape(base + 2), "cdcwh_sink_rows_total")
                        if rows != last:
                            last, idle_since = rows, time.monotonic()
                        elif rows > 0 and time.monotonic() - idle_since > 5:
                            break
                        time.sleep(0.5)
                    for stage, port in zip(STAGES, (base, base + 1, base + 2), strict=True):
                        buckets = [
                            (float(labels["le"]), v)
                            for labels, v in scrape(port).get("cdcwh_freshness_seconds_bucket", [])
                            if labels.get("stage") == stage
                        ]
                        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                            value = histogram_quantile(buckets, q)
                            if value is not None:
                                quantiles[stage][name].append(value)
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                out.close()
            for name, mb in rss.peak_mb.items():
                peaks.setdefault(name, []).append(mb)
            log.print(
                "  "
                + ", ".join(f"{s} p99 {quantiles[s]['p99'][-1]:.2f}s" for s in STAGES if quantiles[s]["p99"])
                + "; peak RSS "
                + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.peak_mb.items())
            )
    bench.results["freshness"] = {
        "rate_events_per_s": args.rate,
        "duration_s": args.duration,
        "achieved_produce_rate": summary(achieved),
        "seconds": {s: {k: summary(v) for k, v in qs.items() if v} for s, qs in quantiles.items()},
        "resolution": "cdcwh_freshness_seconds histogram buckets, linear interpolation inside a bucket",
        "peak_rss_mb": {k: summary(v) for k, v in peaks.items()},
    }


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="change events pre-filled for ingest")
    parser.add_argument("--rows", type=int, default=200_000, help="mart rows for the sink section")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median, min, max)")
    parser.add_argument("--rate", type=float, default=5_000, help="freshness load, events/s")
    parser.add_argument("--duration", type=float, default=60, help="freshness load, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "ingest", "sink", "none"),
        default="auto",
        help="py-spy profile to bench/profiles/ of one extra run of ingest or sink (auto: ingest, and sink "
        "too when its ratio to its raw reference is the lower one)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--keep", action="store_true", help="keep the tmp data dir")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if "rebuild" in args.only and "ingest" not in args.only:
        args.only.append("ingest")  # rebuild needs the ingested bronze
    return args


def fmt(stat: dict[str, Any] | None, spec: str = ",.0f") -> str:
    if not stat:
        return "-"
    return f"{stat['median']:{spec}} ({stat['min']:{spec}} .. {stat['max']:{spec}})"


def report(results: dict[str, Any]) -> Table:
    table = Table(title="cdcwh bench: median (min .. max)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    if ingest := results.get("ingest"):
        table.add_row("raw consume, records/s", fmt(ingest["raw_consume_records_per_s"]), "")
        table.add_row("ingest into bronze, records/s", fmt(ingest["ingest_records_per_s"]), "")
        table.add_row("ingest into bronze, change events/s", fmt(ingest["ingest_events_per_s"]), "")
        table.add_row("ingest / raw consume", fmt(ingest["ratio"], ".2f"), ">= 0.50")
        table.add_row("ingest peak RSS, MB", fmt(ingest["peak_rss_mb"]), "bounded")
    if sink := results.get("sink"):
        table.add_row("raw COPY, rows/s", fmt(sink["raw_copy_rows_per_s"]), "")
        table.add_row("sink upsert (insert), rows/s", fmt(sink["sink_insert_rows_per_s"]), "")
        table.add_row("sink upsert (update), rows/s", fmt(sink["sink_update_rows_per_s"]), "")
        table.add_row("sink insert / raw COPY", fmt(sink["ratio"], ".2f"), ">= 0.50")
        table.add_row("sink update / raw COPY", fmt(sink["ratio_update"], ".2f"), "")
    if fresh := results.get("freshness"):
        for stage, qs in fresh["seconds"].items():
            for name, stat in qs.items():
                target = "<= 5 s" if (stage, name) == ("postgres", "p99") else ""
                table.add_row(f"freshness {stage} {name}, s", fmt(stat, ".2f"), target)
        for service, stat in fresh["peak_rss_mb"].items():
            table.add_row(f"{service} peak RSS under load, MB", fmt(stat), "bounded")
    if rebuild := results.get("rebuild"):
        table.add_row("rebuild, s per million events", fmt(rebuild["seconds_per_million_events"], ".1f"), "")
        if "peak_rss_mb" in rebuild:
            table.add_row("rebuild peak RSS, MB", fmt(rebuild["peak_rss_mb"]), "")
    return table


def save(path: Path, results: dict[str, Any]) -> None:
    """Written after every section too, so an interrupted run keeps what it measured."""
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cdcwh.cli import silence_known_warnings
    from cdcwh.embedded import EmbeddedPostgres

    silence_known_warnings()
    root = Path(tempfile.mkdtemp(prefix="cdcwh-bench-"))
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        (root / "postgres").mkdir()
        with EmbeddedPostgres(root / "postgres", root / "postgres" / "run") as postgres:
            bench = Bench(root=root, pg_dsn=postgres.dsn, args=args, results=results)
            if "sink" in args.only:
                log.print(f"[bold]sink[/]: {args.rows:,} orders mart rows, sink path vs raw COPY ...")
                bench_sink(bench)
                save(args.output, results)
            if "ingest" in args.only:
                bench_ingest(bench)
                save(args.output, results)
            sink_ratio = results.get("sink", {}).get("ratio", {}).get("median", float("inf"))
            ingest_ratio = results.get("ingest", {}).get("ratio", {}).get("median", float("inf"))
            wants_sink = args.profile == "sink" or (args.profile == "auto" and sink_ratio < ingest_ratio)
            if "sink" in results and wants_sink:
                profile = profile_sink(bench)
                results["sink"]["profile"] = str(profile.relative_to(ROOT)) if profile else None
            if "freshness" in args.only:
                bench_freshness(bench)
    finally:
        results["duration_s"] = (datetime.now(UTC) - started).total_seconds()
        save(args.output, results)
        log.print(f"results -> {args.output}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log.print(f"data kept in {root}")
    console.print(report(results))
    return 0
