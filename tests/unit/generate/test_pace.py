"""A paced workload: its streaming changes per simulated minute follow the pace, drops included."""

from __future__ import annotations

from collections import Counter

import pytest

from cdcwh.generate import DEFAULT_START, Drop, Pace, ShopGenerator

START_MS = int(DEFAULT_START.timestamp() * 1000)


def per_minute(pace: Pace, events: int) -> list[int]:
    counts = Counter(
        (c.ts_ms - START_MS) // 60_000 for c in ShopGenerator(2, pace=pace).changes(events) if c.op != "r"
    )
    return [counts[m] for m in range(max(counts))]  # the last minute may be cut short


def test_the_pace_sets_the_changes_per_minute_and_a_drop_lowers_them() -> None:
    counts = per_minute(Pace(200, (Drop(5, 2, 0.1),)), 200 * 12)
    assert len(counts) >= 10
    steady = counts[:5] + counts[7:]
    assert all(150 <= n <= 250 for n in steady), counts
    assert all(n <= 40 for n in counts[5:7]), counts


def test_without_a_pace_the_workload_is_unchanged() -> None:
    assert list(ShopGenerator(2).changes(300)) == list(ShopGenerator(2, pace=None).changes(300))
    assert [c.ts_ms for c in ShopGenerator(2).changes(300)][-1] > START_MS + 60 * 60_000  # ~33 s an event


def test_a_pace_that_would_stop_the_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        Pace(0)
    with pytest.raises(ValueError, match="factor"):
        Drop(1, 1, 0)
