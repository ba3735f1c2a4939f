"""``cdcwh replay ...``: operator replays and rebuilds (docs/operations.md)."""

from __future__ import annotations

import argparse
from datetime import datetime

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cdcwh.config import Settings
from cdcwh.errors import ConfigError

console = Console()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser(
        "replay",
        help="replay a topic, rebuild silver/gold, backfill Postgres or re-ingest quarantine",
        description="Operator replays. Each is safe to run while the services run.",
    )
    what = replay.add_subparsers(dest="what", metavar="WHAT", required=True)
    topic = what.add_parser(
        "topic",
        help="re-read a source topic into bronze from an offset or a time (what bronze has is skipped)",
    )
    topic.add_argument("topic")
    start = topic.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset", type=int, help="offset to start at in every partition (default: earliest)"
    )
    start.add_argument("--from-timestamp", help="ISO time, e.g. 2026-11-22T10:00:00+00:00")
    rebuild = what.add_parser("rebuild", help="rebuild silver and gold from bronze, re-emitting gold changes")
    rebuild.add_argument("--table", action="append", help="silver table to rebuild (repeatable; default all)")
    sink = what.add_parser(
        "sink", help="bulk-load the current gold state into PostgreSQL, merging by version"
    )
    sink.add_argument("--mart", action="append", help="mart to load (repeatable; default all)")
    quarantine = what.add_parser(
        "quarantine", help="re-ingest quarantined records after a fix, then rebuild the affected tables"
    )
    quarantine.add_argument("--reason", help="only records quarantined for this reason")
    quarantine.add_argument("--topic", help="only records of this topic")
    quarantine.add_argument("--no-rebuild", action="store_true", help="land in bronze only; rebuild later")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.what == "topic":
        return _topic(args, settings)
    if args.what == "rebuild":
        return _rebuild(args.table, settings)
    if args.what == "sink":
        return _sink(args, settings)
    return _quarantine(args, settings)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)


def _topic(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.replay.topic import replay_topic

    timestamp_ms = None
    if args.from_timestamp:
        try:
            moment = datetime.fromisoformat(args.from_timestamp)
        except ValueError as exc:
            raise ConfigError(f"--from-timestamp: not an ISO time: {args.from_timestamp}") from exc
        if moment.tzinfo is None:
            raise ConfigError("--from-timestamp: give a time zone, e.g. +00:00")
        timestamp_ms = int(moment.timestamp() * 1000)
    with _progress() as progress:
        task = progress.add_task(f"replaying {args.topic}")
        seen = {"read": 0, "landed": 0}

        def report(read: int, landed: int, skipped: int) -> None:
            seen["read"] += read
            seen["landed"] += landed
            progress.update(
                task, description=f"replaying {args.topic}: {seen['read']:,} read, {seen['landed']:,} new"
            )

        totals = replay_topic(
            settings,
            args.topic,
            from_offset=args.from_offset,
            from_timestamp_ms=timestamp_ms,
            progress=report,
        )
    _summary(f"replay of {args.topic}", totals)
    return 0


def _rebuild(tables: list[str] | None, settings: Settings) -> int:
    from cdcwh.replay.rebuild import rebuild

    with _progress() as progress:
        task = progress.add_task("rebuilding silver from bronze")
        applied = {"n": 0}

        def report(table: str, rows: int) -> None:
            applied["n"] += rows
            progress.update(
                task, description=f"rebuilding silver from bronze: {applied['n']:,} changes applied"
            )

        counts = rebuild(settings, tables, progress=report)
    _summary("rebuild", counts)
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.replay.backfill import backfill

    with _progress() as progress:
        task = progress.add_task("loading gold into PostgreSQL")
        loaded = {"n": 0}

        def report(mart: str, rows: int) -> None:
            loaded["n"] += rows
            progress.update(task, description=f"loading gold into PostgreSQL: {mart}, {loaded['n']:,} rows")

        summary = backfill(settings, args.mart, progress=report)
    table = Table("mart", "rows loaded", "stale rows deleted", title="backfill")
    for mart, counts in summary.items():
        if counts.get("skipped"):
            table.add_row(mart, "skipped: not in gold yet", "")
        else:
            table.add_row(mart, f"{counts['loaded']:,}", f"{counts['deleted']:,}")
    console.print(table)
    skipped = sorted(mart for mart, counts in summary.items() if counts.get("skipped"))
    if skipped:
        console.print(
            f"skipped {', '.join(skipped)}: the transform has not built them yet (their sources have no "
            "rows); run `cdcwh replay sink` again once they exist"
        )
    return 0


def _quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.replay.quarantine import replay_quarantine
    from cdcwh.transform.batch import silver_name

    with console.status("re-decoding quarantined records"):
        result = replay_quarantine(settings, reason=args.reason, topic=args.topic)
    console.print(f"selected {result['selected']} quarantined records")
    landed = result["landed"]
    assert isinstance(landed, dict)  # noqa: S101 - shape of our own result
    for name in ("landed", "already_in_bronze", "still_rejected"):
        _summary(name.replace("_", " "), result[name])  # type: ignore[arg-type]
    if landed and not args.no_rebuild:
        _rebuild(sorted({silver_name(topic) for topic in landed}), settings)
    elif landed:
        console.print("run `cdcwh replay rebuild` for the affected tables to apply them to silver and gold")
    return 0


def _summary(title: str, counts: dict[str, int]) -> None:
    table = Table("", "count", title=title)
    for name, value in counts.items():
        table.add_row(name, f"{value:,}")
    if not counts:
        table.add_row("(none)", "0")
    console.print(table)
