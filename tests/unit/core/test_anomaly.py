"""The anomaly detector on generated series: injected drops and spikes are flagged, steady noise is not."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from cdcwh.core.anomaly import (
    Point,
    baseline,
    detect,
    freshness,
    history_for,
    last_complete_minute,
    per_minute,
)

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
KW = {"threshold": 6.0, "window": 60, "min_points": 10}


def steady(n: int, level: float, noise: float, seed: int = 1) -> list[Point]:
    rng = random.Random(seed)
    return [Point(START + timedelta(minutes=i), level + rng.gauss(0, noise)) for i in range(n)]


def flagged(signal: str, series: list[Point]) -> list[int]:
    """The indexes of the points flagged when each is judged against the ones before it."""
    return [i for i in range(len(series)) if detect(signal, series[: i + 1], **KW) is not None]


def test_steady_volume_raises_no_alarm() -> None:
    # 600 changes a minute, Poisson-like noise, 3 hours
    assert flagged("volume", steady(180, 600, 25)) == []


def test_volume_drop_is_flagged_where_injected() -> None:
    series = steady(120, 600, 25)
    series[100] = Point(series[100].at, 40.0)  # the source stopped sending most changes for a minute
    assert flagged("volume", series) == [100]
    anomaly = detect("volume", series[:101], **KW)
    assert anomaly is not None and anomaly.score < -6
    # the median of the 60 points before it, computed here independently
    window = sorted(p.value for p in series[40:100])
    assert anomaly.baseline.median == (window[29] + window[30]) / 2


def test_null_rate_spike_is_flagged_and_small_windows_are_not() -> None:
    rng = random.Random(7)
    rows = 200
    series = [
        Point(START + timedelta(minutes=i), sum(rng.random() < 0.02 for _ in range(rows)) / rows, rows)
        for i in range(80)
    ]
    assert flagged("null_fraction", series) == []
    series.append(Point(START + timedelta(minutes=80), 0.5, rows))  # half the window's values are null
    assert flagged("null_fraction", series) == [80]
    # one null in a window of 5 rows, over a baseline of none: sampling noise, not a spike
    quiet = [Point(START + timedelta(minutes=i), 0.0, 50) for i in range(30)]
    assert detect("null_fraction", [*quiet, Point(START + timedelta(minutes=30), 0.2, 5)], **KW) is None


def test_too_little_history_gives_no_verdict() -> None:
    series = [*steady(5, 600, 1), Point(START + timedelta(minutes=5), 0.0)]
    assert detect("volume", series, **KW) is None


def test_time_of_day_baseline_accepts_a_nightly_lull() -> None:
    # 4 days: 600 a minute by day, 60 a minute from 02:00 to 03:00 every night
    points = []
    rng = random.Random(3)
    for minute in range(4 * 24 * 60):
        at = START + timedelta(minutes=minute)
        level = 60 if at.hour == 2 else 600
        points.append(Point(at, level + rng.gauss(0, level * 0.03)))
    lull = [i for i, p in enumerate(points) if p.at.day == START.day + 3 and p.at.hour == 2][5]
    base = baseline(points[:lull], points[lull].at, window=60, min_points=10)
    assert base is not None and base.seasonal and 50 < base.median < 70
    assert detect("volume", points[: lull + 1], **KW) is None
    # the same lull against a trailing baseline (a single day of history) is an anomaly
    one_day = [p for p in points[: lull + 1] if p.at.day == START.day + 3 or p.at.hour != 2]
    first_lull = next(i for i, p in enumerate(one_day) if p.at.day == START.day + 3 and p.at.hour == 2)
    assert detect("volume", one_day[: first_lull + 1], **KW) is not None


def test_freshness_counts_seconds_since_the_last_minute_with_changes() -> None:
    counts = {START: 5, START + timedelta(minutes=1): 3, START + timedelta(minutes=4): 1}
    volume = per_minute(counts, START, START + timedelta(minutes=5))
    assert [p.value for p in volume] == [5, 3, 0, 0, 1, 0]
    assert [p.value for p in freshness(volume)] == [0, 0, 60, 120, 0, 60]
    stale = [Point(START + timedelta(minutes=i), 0.0) for i in range(30)]
    assert detect("freshness", [*stale, Point(START + timedelta(minutes=30), 600.0)], **KW) is not None
    # only a rise of freshness counts: data arriving sooner than usual is no anomaly
    slow = [Point(START + timedelta(minutes=i), 600.0) for i in range(30)]
    assert detect("freshness", [*slow, Point(START + timedelta(minutes=30), 0.0)], **KW) is None


def test_a_sparse_table_s_counting_noise_is_no_alarm() -> None:
    # about one change a minute (Poisson), 4 hours: minutes with 0 or 4 changes are ordinary
    rng = random.Random(5)
    series = []
    for i in range(240):
        n, t = 0, rng.expovariate(1.0)
        while t < 1.0:
            n, t = n + 1, t + rng.expovariate(1.0)
        series.append(Point(START + timedelta(minutes=i), float(n)))
    assert flagged("volume", series) == []


def test_history_for_gives_the_verdicts_of_the_whole_history() -> None:
    """Four days of minutes, busy by day and quiet from 01:00 to 02:00: judged on ``history_for`` or on
    everything before, every minute gets the same baseline."""
    rng = random.Random(3)
    series = [
        Point(START + timedelta(minutes=i), (20 if (i // 60) % 24 == 1 else 600) + rng.gauss(0, 5))
        for i in range(4 * 1440)
    ]
    for index in [*range(0, 4 * 1440, 97), 3 * 1440 + 60, 3 * 1440 + 61]:
        at = series[index].at
        whole = baseline(series[:index], at, window=60, min_points=10)
        cut = baseline(history_for(series, index, 60), at, window=60, min_points=10)
        assert cut == whole, index
    night = 3 * 1440 + 61  # 01:01 on the fourth day: compared with earlier nights
    quiet = baseline(history_for(series, night, 60), series[night].at, window=60, min_points=10)
    assert quiet is not None and quiet.seasonal and quiet.median < 40


def test_a_minute_is_complete_once_the_clock_is_the_lateness_past_its_end() -> None:
    clock = datetime(2026, 3, 2, 10, 5, 30, tzinfo=UTC)
    assert last_complete_minute(clock, timedelta(seconds=0)) == datetime(2026, 3, 2, 10, 4, tzinfo=UTC)
    assert last_complete_minute(clock, timedelta(seconds=120)) == datetime(2026, 3, 2, 10, 2, tzinfo=UTC)
    assert last_complete_minute(clock, timedelta(seconds=30)) == datetime(2026, 3, 2, 10, 4, tzinfo=UTC)
