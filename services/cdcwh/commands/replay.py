"""``cdcwh replay ...``: operator replays and rebuilds (docs/operations.md)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cdcwh.commands.output import Format, Grid, add_format_option, emit, make_console
from cdcwh.config import Settings
from cdcwh.errors import ConfigError


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
    for parser in (topic, rebuild, sink, quarantine):
        add_format_option(parser)
    replay.set_defaults(handler=run)


class Report:
    """What a replay prints: its summaries as tables (table, csv) or as one JSON document, and progress and
    notes on the terminal (on stderr unless the format is table, so stdout stays one document)."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.progress_console = make_console() if fmt == "table" else make_console(stderr=True)
        self.grids: list[Grid] = []
        self.document: dict[str, Any] = {}

    def counts(self, key: str, title: str, counts: dict[str, int]) -> None:
        self.document[key] = dict(counts)
        self.add(Grid(title, ["", "count"], [[n, v] for n, v in counts.items()] or [["(none)", 0]]))

    def add(self, grid: Grid) -> None:
        self.grids.append(grid)
        if self.fmt == "table":
            emit("table", [grid], None, self.progress_console)

    def note(self, message: str) -> None:
        self.progress_console.print(message)

    def finish(self) -> int:
        if self.fmt != "table":
            emit(self.fmt, self.grids, self.document)
        return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    report = Report(args.format)
    if args.what == "topic":
        _topic(args, settings, report)
    elif args.what == "rebuild":
        _rebuild(args.table, settings, report)
    elif args.what == "sink":
        _sink(args, settings, report)
    else:
        _quarantine(args, settings, report)
    return report.finish()


def _progress(report: Report) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=report.progress_console,
    )


def _topic(args: argparse.Namespace, settings: Settings, report: Report) -> None:
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
    with _progress(report) as progress:
        task = progress.add_task(f"replaying {args.topic}")
        seen = {"read": 0, "landed": 0}

        def on_progress(read: int, landed: int, skipped: int) -> None:
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
            progress=on_progress,
        )
    report.counts("replay", f"replay of {args.topic}", totals)


def _rebuild(tables: list[str] | None, settings: Settings, report: Report) -> None:
    from cdcwh.replay.rebuild import rebuild

    with _progress(report) as progress:
        task = progress.add_task("rebuilding silver from bronze")
        applied = {"n": 0}

        def on_progress(table: str, rows: int) -> None:
            applied["n"] += rows
            progress.update(
                task, description=f"rebuilding silver from bronze: {applied['n']:,} changes applied"
            )

        counts = rebuild(settings, tables, progress=on_progress)
    report.counts("rebuild", "rebuild", counts)


def _sink(args: argparse.Namespace, settings: Settings, report: Report) -> None:
    from cdcwh.replay.backfill import backfill

    with _progress(report) as progress:
        task = progress.add_task("loading gold into PostgreSQL")
        loaded = {"n": 0}

        def on_progress(mart: str, rows: int) -> None:
            loaded["n"] += rows
            progress.update(task, description=f"loading gold into PostgreSQL: {mart}, {loaded['n']:,} rows")

        summary = backfill(settings, args.mart, progress=on_progress)
    skipped = sorted(mart for mart, counts in summary.items() if counts.get("skipped"))
    report.document["backfill"] = {
        mart: {"skipped": True} if mart in skipped else {"loaded": c["loaded"], "deleted": c["deleted"]}
        for mart, c in summary.items()
    }
    report.add(
        Grid(
            "backfill",
            ["mart", "rows loaded", "stale rows deleted"],
            [
                [mart, "skipped: not in gold yet", None]
                if mart in skipped
                else [mart, c["loaded"], c["deleted"]]
                for mart, c in summary.items()
            ],
            right=frozenset({"stale rows deleted"}),
        )
    )
    if skipped:
        report.note(
            f"skipped {', '.join(skipped)}: the transform has not built them yet (their sources have no "
            "rows); run `cdcwh replay sink` again once they exist"
        )


def _quarantine(args: argparse.Namespace, settings: Settings, report: Report) -> None:
    from cdcwh.replay.quarantine import replay_quarantine
    from cdcwh.transform.batch import silver_name

    with report.progress_console.status("re-decoding quarantined records"):
        result = replay_quarantine(settings, reason=args.reason, topic=args.topic)
    report.document["selected"] = result["selected"]
    report.note(f"selected {result['selected']} quarantined records")
    landed = result["landed"]
    assert isinstance(landed, dict)  # noqa: S101 - shape of our own result
    for name in ("landed", "already_in_bronze", "still_rejected"):
        report.counts(name, name.replace("_", " "), result[name])  # type: ignore[arg-type]
    if landed and not args.no_rebuild:
        _rebuild(sorted({silver_name(topic) for topic in landed}), settings, report)
    elif landed:
        report.note("run `cdcwh replay rebuild` for the affected tables to apply them to silver and gold")
