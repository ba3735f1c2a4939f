"""The soak section: thousands of small bronze commits, as a deployment makes them over days, and whether
commit, transform batch and rebuild times stay flat (docs/benchmarks.md, "Soak").

In one process, for repeatable timing: the bronze writer lands a trickle of shop change events a few at a
time (one commit per table touched, as one ingest checkpoint a second would), the maintenance pass runs every
``--soak-maintain-every`` commits with every file settled at once (the age rule is what a real deployment
waits for; here time is compressed), and a transform batch runs every ``--soak-batch-every`` commits. The
figures are the means over the second tenth (after the snapshot phase) and the last tenth of the run, commit
times per table commit, and their ratio end / start (target <= 1.2). A rebuild of silver and gold from bronze
is timed after the first tenth and at the end.
"""

from __future__ import annotations

import statistics
import time
import zlib
from pathlib import Path
from typing import Any

from bench.common import Bench, broker, log


def bench_soak(bench: Bench) -> None:
    from pydantic import SecretStr

    from cdcwh.bronze.catalog import open_catalog
    from cdcwh.config import IcebergSettings, KafkaSettings, PostgresSettings, Settings
    from cdcwh.core.record import RawRecord
    from cdcwh.generate import ShopGenerator, encode
    from cdcwh.ingest.bronze import IcebergBronzeWriter
    from cdcwh.ingest.maintenance import maintain_all
    from cdcwh.replay.rebuild import rebuild
    from cdcwh.transform.service import TransformService

    args = bench.args
    commits, per_commit = args.soak_commits, args.soak_events_per_commit
    with broker(bench.root, "soak") as bootstrap:
        env = bench.env(bootstrap, "soak")
        settings = Settings(
            data_dir=Path(env["CDCWH_DATA_DIR"]),
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap,
                topics=r"^soak\.[^.]+\.[^.]+$",
                gold_topic_prefix="soak.gold",
            ),
            postgres=PostgresSettings(dsn=SecretStr(bench.pg_dsn)),
        )
        log.print(
            f"[bold]soak[/]: {commits:,} landings of {per_commit} change events, maintenance and batches ..."
        )
        offsets: dict[tuple[str, int], int] = {}
        records: list[RawRecord] = []
        for change in ShopGenerator(args.seed).changes(commits * per_commit):
            for record in encode(change, prefix="soak"):
                partition = zlib.crc32(record.key) % 3
                offset = offsets.get((record.topic, partition), 0)
                offsets[(record.topic, partition)] = offset + 1
                records.append(
                    RawRecord(
                        record.topic, partition, offset, int(time.time() * 1000), record.key, record.value
                    )
                )
        writer = IcebergBronzeWriter(
            open_catalog(settings), settings.iceberg.namespace, {}, max_value_bytes=1 << 20, snapshots_kept=20
        )
        policy = IcebergSettings(compact_after_s=0, min_files_to_compact=8, orphan_age_s=600)
        transform = TransformService(settings)
        land_s: list[float] = []
        batch_s: list[float] = []
        maintain_s: list[float] = []
        rebuild_start: dict[str, float] = {}
        step = max(1, len(records) // commits)
        try:
            for i in range(commits):
                chunk = records[i * step : (i + 1) * step]
                started = time.perf_counter()
                landed = writer.land(chunk)
                # per table commit: a landing of the snapshot phase touches one table, a streaming one several
                land_s.append(
                    (time.perf_counter() - started) / max(1, len(landed.landed) + bool(landed.quarantined))
                )
                if (i + 1) % args.soak_maintain_every == 0:
                    started = time.perf_counter()
                    maintain_all(writer.catalog, settings.iceberg.namespace, policy)
                    maintain_s.append(time.perf_counter() - started)
                if (i + 1) % args.soak_batch_every == 0:
                    started = time.perf_counter()
                    transform.step()
                    batch_s.append(time.perf_counter() - started)
                if i + 1 == commits // 10:
                    transform.release()
                    rebuild_start = _timed_rebuild(rebuild, settings, (i + 1) * step)
                if (i + 1) % max(1, commits // 10) == 0:
                    log.print(f"  {i + 1:,} landings, last {land_s[-1] * 1000:.0f} ms")
            transform.release()
            rebuild_end = _timed_rebuild(rebuild, settings, commits * step)
        finally:
            transform.release()
        tables = _table_shapes(writer)
    tenth = max(1, commits // 10)
    batches_tenth = max(1, len(batch_s) // 10)
    result: dict[str, Any] = {
        "commits": commits,
        "events_per_commit": per_commit,
        "commit_ms": _ends([s * 1000 for s in land_s], tenth),
        "transform_batch_ms": _ends([s * 1000 for s in batch_s], batches_tenth),
        "maintenance_ms_mean": statistics.fmean(maintain_s) * 1000 if maintain_s else None,
        "rebuild_s_per_million_events": {
            "start": rebuild_start["s_per_million"],
            "end": rebuild_end["s_per_million"],
        },
        "tables": tables,
    }
    bench.results["soak"] = result
    land, batch = result["commit_ms"], result["transform_batch_ms"]
    log.print(
        f"  commit {land['start']:.0f} -> {land['end']:.0f} ms (x{land['ratio']:.2f}); "
        f"transform batch {batch['start']:.0f} -> {batch['end']:.0f} ms (x{batch['ratio']:.2f})"
    )


def _ends(values: list[float], n: int) -> dict[str, float]:
    """Means of the second tenth (after the snapshot phase and the tables' creation) and the last tenth."""
    start, end = statistics.fmean(values[n : 2 * n]), statistics.fmean(values[-n:])
    return {"start": start, "end": end, "ratio": end / start if start else float("nan")}


def _timed_rebuild(rebuild: Any, settings: Any, records: int) -> dict[str, float]:
    started = time.perf_counter()
    rebuild(settings)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "s_per_million": seconds / max(records, 1) * 1_000_000}


def _table_shapes(writer: Any) -> dict[str, dict[str, int]]:
    from pyiceberg.manifest import ManifestContent

    shapes = {}
    for identifier in writer.catalog.list_tables(writer.namespace):
        table = writer.catalog.load_table(identifier)
        current = table.current_snapshot()
        if current is None:
            continue
        manifests = [m for m in current.manifests(table.io) if m.content == ManifestContent.DATA]
        files = sum(len(m.fetch_manifest_entry(table.io, discard_deleted=True)) for m in manifests)
        shapes[identifier[-1]] = {
            "manifests": len(manifests),
            "data_files": files,
            "snapshots": len(table.snapshots()),
        }
    return shapes
