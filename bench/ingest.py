"""The ingest section (the ingest service vs a raw confluent-kafka consume of the same records) and the
rebuild section, which reuses the ingested bronze.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    PY_SPY,
    ROOT,
    Bench,
    ProcessWatcher,
    broker,
    cdcwh_cmd,
    log,
    prefill,
    service_of,
    summary,
)

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
    count, start = 0, None
    at_eof: set[tuple[str, int]] = set()
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
        with ProcessWatcher(proc.pid, lambda p: "ingest" if service_of(p) else None) as rss:
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
        "peak_rss_mb_first_half": rss.half_peaks_mb("ingest")[0],
        "peak_rss_mb_second_half": rss.half_peaks_mb("ingest")[1],
        "cpu_s": rss.cpu_s.get("ingest", 0.0),
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
        # bounded: the peak comes with the prefetch and the first batches, not later as more has been read
        "peak_rss_mb_first_half": summary([r["peak_rss_mb_first_half"] for r in ingest]),
        "peak_rss_mb_second_half": summary([r["peak_rss_mb_second_half"] for r in ingest]),
        "cpu_us_per_record": summary([r["cpu_s"] * 1e6 / records for r in ingest]),
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
        with ProcessWatcher(proc.pid, lambda p: "rebuild") as rss:
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
