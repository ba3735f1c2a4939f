"""Knowing when a consumer has caught up, from librdkafka's statistics.

The end of a partition is taken from the high watermark (last stable offset under read_committed) that fetch
responses carry, not from a ListOffsets request: some Kafka-compatible brokers (the embedded Tansu among
them) answer ListOffsets "latest" with a stale value, while their fetch responses are right.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from cdcwh import metrics

INVALID = -1001  # librdkafka's "no offset"


@dataclass
class PartitionStats:
    position: int
    end: int
    low: int
    active: bool

    @property
    def caught_up(self) -> bool:
        if self.end < 0:
            return False
        if self.position >= 0:
            return self.position >= self.end
        return self.end == self.low  # nothing consumed or committed yet: caught up only if empty


class CatchUpTracker:
    """Feed it librdkafka statistics (``stats_cb``); ``caught_up`` says whether this consumer owns all
    ``expected_partitions`` and has consumed each to its end. Also exports ``cdcwh_consumer_lag``.

    Owning all of them matters: right after a crash the group still counts the dead member until its session
    times out, and a partial assignment consumed to its end is not the whole backlog."""

    def __init__(self, group: str, expected_partitions: int) -> None:
        self.group = group
        self.expected_partitions = expected_partitions
        self._lock = threading.Lock()
        self._steady = False
        self._steady_run = 0  # how many of the latest statistics in a row showed the join done
        self._assigned = 0
        self._partitions: dict[tuple[str, int], PartitionStats] = {}
        self.updates = 0

    def on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        cgrp = stats.get("cgrp", {})
        partitions = {}
        for topic, info in stats.get("topics", {}).items():
            for name, p in info.get("partitions", {}).items():
                if name == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                    continue
                position = p.get("app_offset", INVALID)
                if position < 0:
                    position = p.get("committed_offset", INVALID)
                end = p.get("ls_offset", INVALID)
                if end < 0:
                    end = p.get("hi_offset", INVALID)
                partitions[(topic, int(name))] = PartitionStats(
                    position=position,
                    end=end,
                    low=p.get("lo_offset", INVALID),
                    active=p["fetch_state"] == "active",
                )
                start = position if position >= 0 else p.get("lo_offset", INVALID)
                if end >= 0 and start >= 0:  # before the first record: lag from the partition's start
                    metrics.CONSUMER_LAG.labels(self.group, topic, name).set(max(0, end - start))
        with self._lock:
            self._steady = cgrp.get("join_state") == "steady" and cgrp.get("state") == "up"
            self._steady_run = self._steady_run + 1 if self._steady else 0
            self._assigned = int(cgrp.get("assignment_size", 0))
            self._partitions = partitions
            self.updates += 1

    def describe(self) -> str:
        with self._lock:
            behind = sum(1 for p in self._partitions.values() if not (p.active and p.caught_up))
            return (
                f"group {self.group}: this member holds {self._assigned} of {self.expected_partitions} "
                f"partitions, {behind} not yet at their end"
            )

    def steady_since(self, update: int, runs: int = 2) -> bool:
        """Whether the last ``runs`` statistics all arrived after statistics number ``update`` and all showed
        the join done. A single earlier 'steady' can be stale: a restarted broker has dropped the group and
        the member is joining again, but the statistics saying so are up to an interval away."""
        with self._lock:
            return self.updates - update >= runs and self._steady_run >= runs

    def caught_up(self) -> bool:
        with self._lock:
            if not self._steady or self._assigned < self.expected_partitions:
                return False
            if len(self._partitions) < self._assigned:
                return False
            return all(p.active and p.caught_up for p in self._partitions.values())
