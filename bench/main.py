"""The benchmark sections, each on embedded services started here, in a fresh data dir under a tmp dir.

Sections: ingest (vs a raw confluent-kafka consume), avro (the same for Avro topics, and the decoder alone on
JSON vs Avro), sink (vs a raw COPY), freshness (steady load through
``cdcwh run``), rebuild (silver+gold from bronze) and the peak RSS of every service process measured on the
way. Each figure is the median of ``--runs`` runs, with min and max.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.api import bench_api
from bench.avro import bench_avro
from bench.common import BENCH_DIR, ROOT, SECTIONS, Bench, console, log, machine
from bench.freshness import bench_freshness
from bench.ingest import bench_ingest
from bench.sink import bench_sink, profile_sink
from bench.soak import bench_soak


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="change events pre-filled for ingest")
    parser.add_argument("--rows", type=int, default=200_000, help="mart rows for the sink section")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median, min, max)")
    parser.add_argument("--rate", type=float, default=5_000, help="freshness load, events/s")
    parser.add_argument("--duration", type=float, default=60, help="freshness load, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--api-rows", type=int, default=100_000, help="api: orders mart rows")
    parser.add_argument("--api-clients", type=int, default=8, help="api: concurrent clients")
    parser.add_argument("--api-requests", type=int, default=2_000, help="api: requests per figure")
    parser.add_argument("--soak-commits", type=int, default=3000, help="soak: bronze landings")
    parser.add_argument(
        "--soak-events-per-commit", type=int, default=5, help="soak: change events per landing"
    )
    parser.add_argument("--soak-maintain-every", type=int, default=200, help="soak: landings per maintenance")
    parser.add_argument("--soak-batch-every", type=int, default=20, help="soak: landings per transform batch")
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


BODY_READERS = (
    ("orjson_payload", "orjson, JSON payload"),
    ("generated_reader", "generated Avro reader"),
    ("generated_reader_whole", "generated Avro reader, every field built"),
    ("block_reader", "block reader (polars, Arrow columns, lengths checked)"),
    ("fastavro_block", "fastavro block reader"),
)


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
        if "peak_rss_mb_second_half" in ingest:
            table.add_row("  first / second half of the run, MB",
                          f"{ingest['peak_rss_mb_first_half']['median']:,.0f} / "
                          f"{ingest['peak_rss_mb_second_half']['median']:,.0f}", "2nd <= 1st")  # fmt: skip
    if avro := results.get("avro"):
        table.add_row("Avro raw consume, records/s", fmt(avro["raw_consume_records_per_s"]), "")
        table.add_row("Avro ingest into bronze, records/s", fmt(avro["ingest_records_per_s"]), "")
        table.add_row("Avro ingest / raw consume", fmt(avro["ratio"], ".2f"), ">= 0.50")
        table.add_row("decoder alone, us/event JSON", fmt(avro["decode_us_per_event_json"], ".1f"), "")
        table.add_row("decoder alone, us/event Avro", fmt(avro["decode_us_per_event_avro"], ".1f"), "<= JSON")
        body = avro.get("body_us_per_event", {})
        for name, label in BODY_READERS:
            table.add_row(f"  body alone, us/event: {label}", fmt(body.get(name), ".1f"), "")
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
        for process, stat in fresh.get("cpu_us_per_event", {}).items():
            table.add_row(f"{process} CPU per event, us", fmt(stat), "")
    if rebuild := results.get("rebuild"):
        table.add_row("rebuild, s per million events", fmt(rebuild["seconds_per_million_events"], ".1f"), "")
        if "peak_rss_mb" in rebuild:
            table.add_row("rebuild peak RSS, MB", fmt(rebuild["peak_rss_mb"]), "")
    if soak := results.get("soak"):
        for name in ("commit_ms", "transform_batch_ms"):
            figure = soak[name]
            table.add_row(
                f"soak {name.removesuffix('_ms').replace('_', ' ')}, ms start -> end",
                f"{figure['start']:.0f} -> {figure['end']:.0f} (x{figure['ratio']:.2f})",
                "end/start <= 1.2",
            )
        rebuild = soak["rebuild_s_per_million_events"]
        table.add_row(
            "soak rebuild, s per million events start -> end",
            f"{rebuild['start']:.0f} -> {rebuild['end']:.0f}",
            "",
        )
        worst = max(soak["tables"].values(), key=lambda t: t["data_files"], default=None)
        if worst:
            table.add_row(
                "soak most data files / manifests in a table",
                f"{worst['data_files']} / {worst['manifests']}",
                "bounded",
            )
    if api := results.get("api"):
        clients = api["clients"]
        table.add_row(f"plain psycopg SELECT, queries/s ({clients} clients)", fmt(api["plain_per_s"]), "")
        table.add_row("API semantic query cached, requests/s", fmt(api["cached_per_s"]), "")
        table.add_row("API semantic query uncached, requests/s", fmt(api["uncached_per_s"]), "")
        table.add_row("API cached / plain SELECT", fmt(api["ratio_cached"], ".2f"), "")
        table.add_row("API uncached / plain SELECT", fmt(api["ratio_uncached"], ".2f"), "")
        if "ratio_page" in api:
            table.add_row("API typed page (orders, 100 rows), requests/s", fmt(api["page_per_s"]), "")
            table.add_row("its plain SELECT, queries/s", fmt(api["page_plain_per_s"]), "")
            table.add_row("API typed page / plain SELECT", fmt(api["ratio_page"], ".2f"), "")
        for name in ("plain", "cached", "uncached", "page", "page_plain"):
            if f"{name}_p99_ms" in api:
                table.add_row(f"p99 latency {name}, ms", fmt(api[f"{name}_p99_ms"], ".1f"), "")
    return table


def save(path: Path, results: dict[str, Any]) -> None:
    """Written after every section too, so an interrupted run keeps what it measured."""
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cdcwh.embedded import EmbeddedPostgres
    from cdcwh.logs import silence_known_warnings

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
            bench.pg_pid = postgres.record.pid if postgres.record else None
            if "sink" in args.only:
                log.print(f"[bold]sink[/]: {args.rows:,} orders mart rows, sink path vs raw COPY ...")
                bench_sink(bench)
                save(args.output, results)
            if "ingest" in args.only:
                bench_ingest(bench)
                save(args.output, results)
            if "avro" in args.only:
                bench_avro(bench)
                save(args.output, results)
            sink_ratio = results.get("sink", {}).get("ratio", {}).get("median", float("inf"))
            ingest_ratio = results.get("ingest", {}).get("ratio", {}).get("median", float("inf"))
            wants_sink = args.profile == "sink" or (args.profile == "auto" and sink_ratio < ingest_ratio)
            if "sink" in results and wants_sink:
                profile = profile_sink(bench)
                results["sink"]["profile"] = str(profile.relative_to(ROOT)) if profile else None
            if "freshness" in args.only:
                bench_freshness(bench)
                save(args.output, results)
            if "soak" in args.only:
                bench_soak(bench)
            if "api" in args.only:
                log.print(
                    f"[bold]api[/]: a semantic query, {args.api_clients} clients, vs a plain SELECT ..."
                )
                bench_api(bench)
                save(args.output, results)
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
