"""``cdcwh status``: lag per topic-partition, last batches, freshness, quarantine counts, and an exit code
for scripts and readiness probes (0 healthy, 1 lagging or stale, 2 a part unreachable). The data comes from
cdcwh.overview.status; this module parses the options and prints."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cdcwh.commands.args import non_negative_float, non_negative_int
from cdcwh.commands.output import Grid, add_format_option, emit, make_console
from cdcwh.config import Settings

if TYPE_CHECKING:
    from cdcwh.overview.status import Status

# cdcwh.overview.status.DEFAULT_*: not imported here, so that building the parser stays light
DEFAULT_MAX_LAG = 10_000
DEFAULT_MAX_STALENESS_S = 300.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="lag per topic-partition, last batches, freshness and quarantine counts; exit 0/1/2 for probes",
        description="Read-only overview of every part: Kafka (end offsets from fetches, the ingest and "
        "sink groups), bronze (landed offsets, quarantine), the DuckDB warehouse (silver watermarks, "
        "transform batches, silver freshness, gold models behind) and PostgreSQL (rows and newest write per "
        "mart), each reported or marked unreachable on its own. Exit 0 healthy, 1 lagging or stale beyond "
        "the thresholds, 2 a part unreachable (docs/operations.md, 'Readiness').",
    )
    add_format_option(parser)
    parser.add_argument(
        "--max-lag",
        type=non_negative_int,
        default=DEFAULT_MAX_LAG,
        help=f"records a partition may be behind silver (or a gold topic behind the sink) before exit 1 "
        f"(default {DEFAULT_MAX_LAG})",
    )
    parser.add_argument(
        "--max-staleness",
        type=non_negative_float,
        default=DEFAULT_MAX_STALENESS_S,
        metavar="SECONDS",
        help="seconds a stage with work waiting may go without progress before exit 1 "
        f"(default {DEFAULT_MAX_STALENESS_S:g})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.overview.status import Thresholds, collect_status

    status = collect_status(settings, Thresholds(args.max_lag, args.max_staleness))
    out = make_console()
    emit(args.format, grids(status), status, out)
    assert status.health is not None  # noqa: S101 - collect_status always assesses
    if args.format == "table":
        out.print(f"{status.health.state} (exit {status.health.code})")
        for problem in status.health.problems:
            out.print(f"  {problem}")
    return status.health.code


def grids(status: Status) -> list[Grid]:
    """The status as the tables the table and csv formats print."""
    return [
        Grid("parts", ["part", "reachable", "error"], [[p.name, p.reachable, p.error] for p in status.parts]),
        Grid(
            "lag",
            ["topic", "partition", "end", "ingest committed", "in bronze", "in silver", "behind"],
            [
                [s.topic, s.partition, s.end, s.ingest_committed, s.in_bronze, s.in_silver, s.behind]
                for s in status.source
            ],
            right=frozenset({"end", "ingest committed", "in bronze", "in silver", "behind"}),
        ),
        Grid(
            "sink lag",
            ["gold topic", "partition", "end", "sink committed", "behind"],
            [[s.topic, s.partition, s.end, s.committed, s.behind] for s in status.sink],
            right=frozenset({"end", "sink committed", "behind"}),
        ),
        Grid(
            "last transform batches",
            ["batch", "started", "ended", "status", "bronze rows", "gold changes", "error"],
            [
                [
                    b.batch_id,
                    _time(b.started_at),
                    _time(b.ended_at),
                    b.status,
                    b.bronze_rows,
                    b.gold_changes,
                    b.error,
                ]
                for b in status.batches
            ]
            + [
                [f"gold.{g.model}", None, None, f"behind since batch {g.since_batch}", None, None, g.error]
                for g in status.gold_behind
            ],
            right=frozenset({"bronze rows", "gold changes"}),
        ),
        Grid(
            "silver",
            ["silver table", "newest source commit", "rows"],
            [[t.name, _time(t.newest_source_commit), t.rows] for t in status.silver],
            right=frozenset({"rows"}),
        ),
        Grid(
            "postgres marts",
            ["mart", "rows", "newest write", "age (s)"],
            [[m.name, m.rows, _time(m.newest_write), _age(status, m.newest_write)] for m in status.marts],
            right=frozenset({"rows", "age (s)"}),
        ),
        Grid(
            "quarantine",
            ["topic", "reason", "outstanding", "re-ingested"],
            [[q.topic, q.reason, q.outstanding, q.reingested] for q in status.quarantine],
            right=frozenset({"outstanding", "re-ingested"}),
        ),
    ]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _age(status: Status, moment: Any) -> str | None:
    if not isinstance(moment, datetime):
        return None
    return f"{(status.checked_at - moment).total_seconds():.1f}"
