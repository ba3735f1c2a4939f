"""``cdcwh generate``: the shop workload to Kafka or to a JSON-lines file."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cdcwh.commands.args import positive_float, positive_int
from cdcwh.commands.output import make_console
from cdcwh.config import Settings
from cdcwh.generate import KafkaRecord, ShopGenerator, encode, produce, write_jsonl
from cdcwh.generate.model import FIRST_LSN
from cdcwh.kafka import producer_config

console = make_console(stderr=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser(
        "generate",
        help="produce a Debezium-format shop workload to Kafka (or a JSON-lines file)",
        description="Simulate the Debezium PostgreSQL connector for the shop tables: a snapshot, then "
        "creates, updates and deletes (each followed by a tombstone). Same seed, same events.",
    )
    gen.add_argument(
        "--events", type=positive_int, default=10_000, help="change events to emit (default 10000)"
    )
    gen.add_argument(
        "--rate", type=positive_float, default=None, help="events per second (default: no limit)"
    )
    gen.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    gen.add_argument("--partitions", type=positive_int, default=3, help="partitions per topic (default 3)")
    gen.add_argument("--schemaless", action="store_true", help="emit JSON without the schema envelope")
    gen.add_argument(
        "--topic-prefix", default="shop", help="Debezium topic prefix: topics are <prefix>.public.<table>"
    )
    gen.add_argument(
        "--output", metavar="FILE", help="write JSON lines to FILE instead of producing to Kafka"
    )
    gen.add_argument(
        "--expected-state", metavar="FILE", help="also write the final state of every table as JSON to FILE"
    )
    gen.add_argument(
        "--into-source",
        action="store_true",
        help="run the workload as SQL transactions against the source PostgreSQL instead (its capture "
        "produces the change events; docs/generator.md)",
    )
    gen.add_argument(
        "--source-dsn",
        help="with --into-source: the source database (default: CDCWH_SOURCE__DSN, else the embedded source)",
    )
    gen.add_argument(
        "--simulated-time",
        action="store_true",
        help="keep the simulated source commit times (default when producing: stamp the wall clock, so "
        "freshness can be measured)",
    )
    gen.set_defaults(handler=run)


def wall_clock_lsn() -> int:
    """A first LSN that grows with the wall clock, so that a later run's changes come after an earlier run's
    (a real source's WAL position only grows; silver drops a change at or below an LSN it has applied)."""
    return FIRST_LSN + time.time_ns() // 1000 * 64


def records(
    generator: ShopGenerator,
    events: int,
    *,
    schemaless: bool,
    prefix: str,
    wall_clock: bool,
    counts: dict[str, int],
) -> Iterator[KafkaRecord]:
    """Encode the generator's changes; stamps the wall clock as source commit time when asked."""
    for change in generator.changes(events):
        counts[f"{change.table}:{change.op}"] = counts.get(f"{change.table}:{change.op}", 0) + 1
        ts_ms = time.time_ns() // 1_000_000 if wall_clock else None
        yield from encode(change, schemaless=schemaless, prefix=prefix, ts_ms=ts_ms)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_expected_state(generator: ShopGenerator, path: Path) -> None:
    state = generator.expected_state()
    serialisable = {table: list(rows.values()) for table, rows in state.items()}
    path.write_text(json.dumps(serialisable, default=_json_default, indent=1))


def produce_workload(
    settings: Settings,
    *,
    events: int,
    seed: int,
    rate: float | None,
    counts: dict[str, int],
    partitions: int = 3,
) -> int:
    """The shop workload to Kafka with wall-clock source times (the demo's producer); returns records sent."""
    generator = ShopGenerator(seed, first_lsn=wall_clock_lsn())
    stream = records(generator, events, schemaless=False, prefix="shop", wall_clock=True, counts=counts)
    return produce(stream, producer_config=producer_config(settings), partitions=partitions, rate=rate)


def progress_bar(label: str) -> Progress:
    """The bar both workloads show on stderr while they produce."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def run_into_source(args: argparse.Namespace, settings: Settings) -> int:
    """``--into-source``: the workload as SQL transactions against the source PostgreSQL."""
    from cdcwh.generate.sql_workload import apply_workload
    from cdcwh.reconcile.dsn import source_dsn

    dsn = source_dsn(settings, args.source_dsn)
    with progress_bar("generate into the source") as progress:
        task = progress.add_task("events", total=args.events)
        result = apply_workload(
            dsn,
            events=args.events,
            seed=args.seed,
            rate=args.rate,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    host = psycopg_conninfo_host(dsn)
    summarise(result.counts, result.transactions, host, unit="transactions")
    if result.rekeyed_order is not None:
        old, new = result.rekeyed_order
        console.print(f"primary-key change: order {old} -> {new}")
    console.print(f"customers.loyalty_tier: {'present' if result.added_column else 'not added'}")
    return 0


def psycopg_conninfo_host(dsn: str) -> str:
    """Where a DSN points, without its password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - only for display
        return "the source database"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "into_source", False):
        return run_into_source(args, settings)
    counts: dict[str, int] = {}
    to_kafka = args.output is None
    wall_clock = to_kafka and not args.simulated_time
    generator = ShopGenerator(args.seed, first_lsn=wall_clock_lsn() if wall_clock else FIRST_LSN)
    stream = records(
        generator,
        args.events,
        schemaless=args.schemaless,
        prefix=args.topic_prefix,
        wall_clock=wall_clock,
        counts=counts,
    )
    with progress_bar("generate") as progress:
        task = progress.add_task("records", total=None)
        if to_kafka:
            config = producer_config(settings)
            written = produce(
                stream,
                producer_config=config,
                partitions=args.partitions,
                rate=args.rate,
                on_progress=lambda n: progress.update(task, completed=n),
            )
            where = config["bootstrap.servers"]
        else:
            written = write_jsonl(stream, Path(args.output))
            where = args.output
    if args.expected_state:
        write_expected_state(generator, Path(args.expected_state))
    summarise(counts, written, where)
    return 0


def summarise(counts: dict[str, int], written: int, where: str, *, unit: str = "Kafka records") -> None:
    from rich.table import Table

    tables = sorted({key.split(":")[0] for key in counts})
    ops = ["r", "c", "u", "d"]
    table = Table(title=f"{sum(counts.values())} change events, {written} {unit} -> {where}")
    table.add_column("table")
    for op in ops:
        table.add_column(op, justify="right")
    for name in tables:
        table.add_row(name, *(str(counts.get(f"{name}:{op}", 0)) for op in ops))
    make_console().print(table)
