"""Answers cached by compiled SQL and parameters, dropped the moment a mart they read gets a new version.

Each mart has a generation, bumped by every announcement of it. An answer is stored only if the generations
of its marts did not move while it was computed, so an answer read before a change and finished after its
announcement is never cached: a cached answer is never staler than PostgreSQL's committed marts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ResultCache(Generic[T]):
    def __init__(self, size: int, max_rows: int | None = None) -> None:
        """At most ``size`` answers holding ``max_rows`` rows in all (None: no bound on rows); an answer of
        more rows than that is not cached."""
        self.size = size
        self.max_rows = max_rows
        self.rows = 0
        self._entries: OrderedDict[Hashable, tuple[frozenset[str], T, int]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped when every answer is dropped

    def generations(self, marts: Iterable[str]) -> tuple[int, ...]:
        return (self._epoch, *(self._generations.get(m, 0) for m in sorted(marts)))

    def get(self, key: Hashable) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(
        self, key: Hashable, marts: frozenset[str], value: T, generations: tuple[int, ...], rows: int = 0
    ) -> bool:
        """Store ``value`` (of ``rows`` rows) unless one of ``marts`` changed since ``generations`` were
        taken, or it alone holds more rows than the cache may."""
        if self.size == 0 or self.generations(marts) != generations:
            return False
        if self.max_rows is not None and rows > self.max_rows:
            return False
        self._drop(key)
        self._entries[key] = (marts, value, rows)
        self.rows += rows
        while len(self._entries) > self.size or (self.max_rows is not None and self.rows > self.max_rows):
            self._drop(next(iter(self._entries)))
        return True

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.rows -= entry[2]

    def invalidate(self, marts: Iterable[str] | None) -> int:
        """Drop the answers reading any of ``marts`` (None: all of them, e.g. after missed announcements)."""
        if marts is None:
            self._epoch += 1
            dropped = len(self._entries)
            self._entries.clear()
            self.rows = 0
            return dropped
        changed = set(marts)
        for mart in changed:
            self._generations[mart] = self._generations.get(mart, 0) + 1
        stale = [k for k, (m, _, _) in self._entries.items() if m & changed]
        for key in stale:
            self._drop(key)
        return len(stale)
