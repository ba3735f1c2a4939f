"""``cdcwh profile <table>``: the latest column profile of a silver table or gold model and its drift from the
previous one (read-only on the warehouse file; the transform profiles every ``audit.profile_interval_s``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdcwh.commands.output import Grid, add_format_option, emit, make_console
from cdcwh.config import Settings

LAYERS = ("silver", "gold")
QUERY = """SELECT layer, table_name, column_name, profiled_at, row_count, null_fraction, distinct_estimate,
    min_value, max_value, mean, top_values
FROM cdcwh.column_profiles
WHERE layer = ? AND table_name = ? AND profiled_at IN (
    SELECT DISTINCT profiled_at FROM cdcwh.column_profiles WHERE layer = ? AND table_name = ?
    ORDER BY profiled_at DESC LIMIT 2)
ORDER BY profiled_at DESC, column_name"""


@dataclass
class ColumnDrift:
    column: str
    rows: int
    null_fraction: float | None
    null_fraction_change: float | None
    distinct_estimate: int | None
    distinct_change: int | None
    min_value: str | None
    max_value: str | None
    mean: float | None
    mean_change: float | None
    top_values: list[str] | None
    new_top_values: list[str] | None
    """Top values that were not among the previous profile's."""


@dataclass
class Profile:
    table: str
    profiled_at: datetime
    previous_at: datetime | None
    columns: list[ColumnDrift] = field(default_factory=list)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "profile",
        help="the latest column profile of a table and its drift from the previous one",
        description="Prints the latest profile of a silver table or gold model (per column: rows, null "
        "fraction, distinct estimate, min, max, mean, top values) and what changed since the previous "
        "profile. Exit 1 when the table has no profile yet (docs/data-quality.md).",
    )
    parser.add_argument("table", help="silver.<table>, gold.<model>, or a name (silver first, then gold)")
    add_format_option(parser)
    parser.set_defaults(handler=run)


def _delta(new: Any, old: Any) -> Any:
    return None if new is None or old is None else new - old


def _drift(latest: tuple[Any, ...], previous: tuple[Any, ...] | None) -> ColumnDrift:
    _, _, column, _, rows, nulls, distinct, low, high, mean, top = latest
    top_values = None if top is None else list(json.loads(top))
    before: dict[str, Any] = {}
    if previous is not None:
        before = {"nulls": previous[5], "distinct": previous[6], "mean": previous[9], "top": previous[10]}
    old_top = None if before.get("top") is None else set(json.loads(before["top"]))
    return ColumnDrift(
        column=column,
        rows=int(rows),
        null_fraction=nulls,
        null_fraction_change=_delta(nulls, before.get("nulls")),
        distinct_estimate=distinct,
        distinct_change=_delta(distinct, before.get("distinct")),
        min_value=low,
        max_value=high,
        mean=mean,
        mean_change=_delta(mean, before.get("mean")),
        top_values=top_values,
        new_top_values=None
        if top_values is None or old_top is None
        else [v for v in top_values if v not in old_top],
    )


def load_profile(settings: Settings, name: str) -> Profile | None:
    from cdcwh.warehouse import open_warehouse, table_exists

    layer, _, table = name.partition(".") if name.split(".", 1)[0] in LAYERS else ("", "", name)
    con = open_warehouse(settings, read_only=True)
    try:
        if not table_exists(con, "cdcwh", "column_profiles"):
            return None
        for candidate in [layer] if layer else list(LAYERS):
            rows = con.execute(QUERY, [candidate, table, candidate, table]).fetchall()
            if rows:
                break
        else:
            return None
    finally:
        con.close()
    latest_at = rows[0][3]
    latest = [r for r in rows if r[3] == latest_at]
    previous = {r[2]: r for r in rows if r[3] != latest_at}
    previous_at = next(iter(previous.values()))[3] if previous else None
    profile = Profile(f"{rows[0][0]}.{rows[0][1]}", latest_at, previous_at)
    profile.columns = [_drift(r, previous.get(r[2])) for r in latest]
    return profile


def _signed(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:+.{digits}g}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    profile = load_profile(settings, args.table)
    out = make_console()
    if profile is None:
        make_console(stderr=True).print(
            f"no profile of {args.table} yet: the transform profiles silver and gold every "
            f"audit.profile_interval_s ({settings.audit.profile_interval_s:g} s)"
        )
        return 1
    title = f"{profile.table} profiled at {profile.profiled_at.isoformat()}"
    if profile.previous_at is not None:
        title += f" (drift from {profile.previous_at.isoformat()})"
    columns = [
        "column",
        "rows",
        "null_fraction",
        "Δ nulls",
        "distinct",
        "Δ distinct",
        "min",
        "max",
        "mean",
        "Δ mean",
        "top values",
    ]
    rows = [
        [
            c.column,
            c.rows,
            None if c.null_fraction is None else round(c.null_fraction, 4),
            _signed(c.null_fraction_change),
            c.distinct_estimate,
            _signed(c.distinct_change),
            c.min_value,
            c.max_value,
            None if c.mean is None else round(c.mean, 6),
            _signed(c.mean_change),
            None if c.top_values is None else ", ".join(c.top_values),
        ]
        for c in profile.columns
    ]
    emit(args.format, [Grid(title, columns, rows, right=frozenset({"rows", "distinct"}))], profile, out)
    return 0
