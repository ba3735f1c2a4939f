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
    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[frozenset[str], T]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped when every answer is dropped
        self.hits = 0
        self.misses = 0

    def generations(self, marts: Iterable[str]) -> tuple[int, ...]:
        return (self._epoch, *(self._generations.get(m, 0) for m in sorted(marts)))

    def get(self, key: Hashable) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, marts: frozenset[str], value: T, generations: tuple[int, ...]) -> bool:
        """Store ``value`` unless one of ``marts`` changed since ``generations`` were taken."""
        if self.size == 0 or self.generations(marts) != generations:
            return False
        self._entries[key] = (marts, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return True

    def invalidate(self, marts: Iterable[str] | None) -> int:
        """Drop the answers reading any of ``marts`` (None: all of them, e.g. after missed announcements)."""
        if marts is None:
            self._epoch += 1
            dropped = len(self._entries)
            self._entries.clear()
            return dropped
        changed = set(marts)
        for mart in changed:
            self._generations[mart] = self._generations.get(mart, 0) + 1
        stale = [k for k, (m, _) in self._entries.items() if m & changed]
        for key in stale:
            del self._entries[key]
        return len(stale)
