"""``serve.rate_limit`` per subject (and a looser one per client address, before authentication): a moving
window in the server's memory (per server process)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from cdcwh.metrics import API_RATE_LIMITED


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Limiter:
    def __init__(self, rate: str | RateLimitItem) -> None:
        self.item = parse(rate) if isinstance(rate, str) else rate
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: str) -> None:
        if not self.limiter.hit(self.item, key):
            reset = self.limiter.get_window_stats(self.item, key).reset_time
            API_RATE_LIMITED.inc()
            raise RateLimited(max(1, math.ceil(reset - time.time())))
