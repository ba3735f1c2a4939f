"""``Pace``: how fast a generated workload's simulated clock runs, for a workload at a given rate per minute
with injected drops (the anomaly detector's tests).

Without a pace the clock advances about 33 s per streaming change event (``ShopModel.begin``). With one,
the gap before each event is drawn uniformly from ``[0, 2 * 60 / rate)`` seconds, so a minute holds
``rate`` events on average, where ``rate`` is ``per_minute`` times the ``factor`` of a ``Drop`` covering
the current minute (counted from the generator's ``start``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MINUTE_US = 60_000_000


@dataclass(frozen=True, slots=True)
class Drop:
    """The minutes ``[start_minute, start_minute + minutes)`` run at ``factor`` times the pace's rate."""

    start_minute: int
    minutes: int
    factor: float

    def __post_init__(self) -> None:
        if self.start_minute < 0 or self.minutes < 1:
            raise ValueError(f"a drop needs start_minute >= 0 and minutes >= 1, not {self}")
        if not 0 < self.factor:
            raise ValueError(f"a drop's factor must be above 0 (the clock would stop), not {self.factor}")


@dataclass(frozen=True, slots=True)
class Pace:
    """Streaming change events per simulated minute, on average, with optional drops."""

    per_minute: float
    drops: tuple[Drop, ...] = ()

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ValueError(f"per_minute must be above 0, not {self.per_minute}")

    def rate(self, minute: int) -> float:
        """Events per minute in the ``minute``-th minute after the start."""
        factor = 1.0
        for drop in self.drops:
            if drop.start_minute <= minute < drop.start_minute + drop.minutes:
                factor *= drop.factor
        return self.per_minute * factor

    def gap_us(self, rng: random.Random, elapsed_us: int) -> int:
        """The simulated time before the next event, ``elapsed_us`` after the start."""
        mean_us = MINUTE_US / self.rate(max(0, elapsed_us) // MINUTE_US)
        return rng.randrange(0, max(2, round(2 * mean_us)))
