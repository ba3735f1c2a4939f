"""Anomaly detection on a time series against a robust baseline: pure, no I/O.

A signal (a source table's change volume per minute or its freshness, a profiled column's null fraction or
mean) is a series of ``Point``s. The newest point is compared with a baseline of the points before it:

- **trailing**: the last ``window`` points;
- **time-of-day**: when the history holds points at the same UTC hour on at least ``SEASONAL_DAYS`` earlier
  days, only those (the last ``window`` of them), so that a nightly lull is compared with earlier nights.

The baseline is the median and the MAD (median absolute deviation); the score is the distance from the
median in scaled MADs (``1.4826 * MAD``, a standard deviation for normal data). A steady signal has a MAD
near zero, which would make any wobble infinite: the scale is at least a floor per signal (``FLOORS``,
absolute and relative to the median), and a sampling floor: for a volume (a count) its Poisson noise
``sqrt(median)``; for a null fraction measured on ``n`` rows the binomial error ``sqrt(p(1-p)/n)``, so
that one null in a small window is not a spike; for a mean its standard error ``stddev/sqrt(n)``. A point
whose ``|score|`` exceeds the threshold is an ``Anomaly`` (for freshness only a rise counts).
Fewer than ``min_points`` history points give no verdict.

Per-minute series are judged minute by minute: ``last_complete_minute`` says which minutes are complete by
a clock (for volume the newest source commit time seen, less a lateness), ``history_for`` cuts the part of
a long series a baseline can use.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

MAD_TO_SIGMA: Final = 1.4826
SEASONAL_DAYS: Final = 3


@dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    value: float
    rows: int | None = None
    """How many rows the value was measured on (a profile's window), for the sampling floor."""
    spread: float | None = None
    """The standard deviation of the values a mean was taken over, for the sampling floor."""


@dataclass(frozen=True, slots=True)
class Floor:
    """The least scale of a signal's score: ``max(absolute, relative * |median|)``."""

    absolute: float
    relative: float


FLOORS: Final[Mapping[str, Floor]] = {
    "volume": Floor(absolute=1.0, relative=0.1),  # changes per minute
    "freshness": Floor(absolute=60.0, relative=0.1),  # seconds
    "null_fraction": Floor(absolute=0.02, relative=0.1),
    "mean": Floor(absolute=1e-9, relative=0.05),
}
ONE_SIDED: Final = frozenset({"freshness"})
"""Signals where only a rise is an anomaly (data arriving late; early is never a problem)."""


@dataclass(frozen=True, slots=True)
class Baseline:
    median: float
    mad: float
    points: int
    seasonal: bool


@dataclass(frozen=True, slots=True)
class Anomaly:
    signal: str
    at: datetime
    value: float
    baseline: Baseline
    score: float
    threshold: float


def baseline(history: Sequence[Point], at: datetime, *, window: int, min_points: int) -> Baseline | None:
    """The median and MAD of the history before ``at`` (see the module docstring); None when too short."""
    before = [p for p in history if p.at < at]
    same_hour = [p for p in before if p.at.hour == at.hour and p.at.date() != at.date()]
    seasonal = len({p.at.date() for p in same_hour}) >= SEASONAL_DAYS
    values = [p.value for p in (same_hour if seasonal else before)][-window:]
    if len(values) < min_points:
        return None
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return Baseline(median=median, mad=mad, points=len(values), seasonal=seasonal)


def score(
    signal: str, value: float, base: Baseline, rows: int | None = None, spread: float | None = None
) -> float:
    floor = FLOORS[signal]
    scale = max(MAD_TO_SIGMA * base.mad, floor.absolute, floor.relative * abs(base.median))
    if signal == "volume":  # counts: at least their Poisson noise
        scale = max(scale, math.sqrt(abs(base.median)))
    if signal == "null_fraction" and rows:
        p = min(max(base.median, 1 / rows), 0.5)
        scale = max(scale, math.sqrt(p * (1 - p) / rows))
    if signal == "mean" and rows and spread:
        scale = max(scale, spread / math.sqrt(rows))
    return (value - base.median) / scale


def detect(
    signal: str, series: Sequence[Point], *, threshold: float, window: int, min_points: int
) -> Anomaly | None:
    """The newest point of ``series`` (sorted by time) as an anomaly, or None."""
    if not series:
        return None
    last = series[-1]
    base = baseline(series[:-1], last.at, window=window, min_points=min_points)
    if base is None:
        return None
    z = score(signal, last.value, base, last.rows, last.spread)
    beyond = z > threshold if signal in ONE_SIDED else abs(z) > threshold
    return Anomaly(signal, last.at, last.value, base, z, threshold) if beyond else None


def last_complete_minute(clock: datetime, lateness: timedelta) -> datetime:
    """The start of the newest minute that ended at least ``lateness`` before ``clock``."""
    return (clock - lateness).replace(second=0, microsecond=0) - timedelta(minutes=1)


def history_for(series: Sequence[Point], index: int, window: int) -> list[Point]:
    """The points before ``series[index]`` (a series sorted by time) that ``baseline`` can use: those at the
    same UTC hour on earlier days, and the last ``window``, in order. Judging a point of a long series
    against them gives the verdict the whole series before it gives, without reading all of it."""
    at = series[index].at
    trailing = list(series[max(0, index - window) : index])
    newest = trailing[0].at if trailing else at  # older same-hour points only: the trailing ones are kept
    hour = at.replace(minute=0, second=0, microsecond=0)
    same_hour: list[Point] = []
    day = timedelta(days=1)
    start = hour - day
    while series and start + timedelta(hours=1) > series[0].at:
        low = bisect.bisect_left(series, start, 0, index, key=_at)
        high = bisect.bisect_left(series, min(start + timedelta(hours=1), newest), 0, index, key=_at)
        same_hour[:0] = series[low:high]
        start -= day
    return [*same_hour, *trailing]


def _at(point: Point) -> datetime:
    return point.at


def per_minute(counts: Mapping[datetime, int], start: datetime, end: datetime) -> list[Point]:
    """Change counts per minute from ``start`` to ``end`` (both minute starts, inclusive), zero where a
    minute has no count."""
    points: list[Point] = []
    minute = start
    while minute <= end:
        points.append(Point(minute, float(counts.get(minute, 0))))
        minute += timedelta(minutes=1)
    return points


def freshness(volume: Sequence[Point]) -> list[Point]:
    """Seconds since the last minute with changes, at the end of each minute of a per-minute volume series
    (0 for a minute with changes); the minutes before the first change have no point."""
    points: list[Point] = []
    last: datetime | None = None
    for point in volume:
        if point.value > 0:
            last = point.at
        if last is not None:
            points.append(Point(point.at, (point.at - last).total_seconds()))
    return points
