"""The restart back-off of supervised loops (the capture engine); kept apart from cdcwh.retry, whose error
mapping imports every driver, so that commands that only build their parser stay light."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    """Waits between restarts: ``first_s`` doubling up to ``max_s``; a run of at least ``healthy_after_s``
    starts the doubling again from ``first_s``."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        self._next = self.first_s

    def wait(self, ran_for_s: float) -> float:
        """The wait before the next start of something that stopped after running ``ran_for_s`` seconds."""
        if ran_for_s >= self.healthy_after_s:
            self._next = self.first_s
        wait, self._next = self._next, min(self.max_s, self._next * 2)
        return wait
