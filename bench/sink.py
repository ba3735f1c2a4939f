"""The sink section: mart rows upserted through ``PostgresMartSink`` vs a raw COPY of the same rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, PY_SPY, ROOT, Bench, log, summary

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

    from cdcwh.goldfeed import GoldChange
    from cdcwh.sink.postgres import PostgresMartSink

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
