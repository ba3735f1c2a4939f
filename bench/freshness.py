"""The freshness section: a steady generated load through ``cdcwh run``; seconds from source commit to
each stage, peak RSS and CPU per event of every process.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.common import (
    BROKER_PIDS,
    STAGES,
    Bench,
    ProcessWatcher,
    broker,
    cdcwh_cmd,
    create_topics,
    histogram_quantile,
    log,
    metric_total,
    prefill,
    scrape,
    service_of,
    summary,
    tree_cpu_s,
)

# ------------------------------------------------------------------------------------------- freshness


def bench_freshness(bench: Bench) -> None:
    import psycopg

    args = bench.args
    quantiles: dict[str, dict[str, list[float]]] = {s: {"p50": [], "p95": [], "p99": []} for s in STAGES}
    peaks: dict[str, list[float]] = {}
    achieved = []
    cpu_us: dict[str, list[float]] = {}  # CPU microseconds per event, per process, load to settled
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
                with ProcessWatcher(proc.pid, service_of) as rss:
                    deadline = time.monotonic() + 90
                    while not scrape(base).get("cdcwh_consumer_lag"):
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"cdcwh run did not start consuming; see {out.name}")
                        time.sleep(0.25)
                    events = int(args.rate * args.duration)
                    log.print(f"[bold]freshness[/] run {i + 1}: {events:,} events at {args.rate:,.0f}/s ...")
                    start = time.perf_counter()
                    others = {
                        "broker": BROKER_PIDS.get(bootstrap),
                        "postgres": bench.pg_pid,
                        "load generator": os.getpid(),
                    }
                    cpu_before = {**rss.cpu_s, **{k: cpu_of(k, pid) for k, pid in others.items()}}
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
                    cpu_after = {**rss.cpu_s, **{k: cpu_of(k, pid) for k, pid in others.items()}}
                    for name, used in cpu_after.items():
                        cpu_us.setdefault(name, []).append((used - cpu_before.get(name, 0.0)) * 1e6 / events)
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
        # where the 2 cores go: the services, the broker, Postgres and the load generator (this process)
        "cpu_us_per_event": {k: summary(v) for k, v in cpu_us.items()},
        "cpu_cores_available": os.cpu_count(),
    }


def cpu_of(name: str, pid: int | None) -> float:
    """CPU seconds so far: the broker and Postgres with their child processes; the load generator is this
    process alone (its children are the services, the broker and Postgres, counted on their own)."""
    return tree_cpu_s(pid, children=name != "load generator")
