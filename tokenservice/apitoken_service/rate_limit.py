"""A token-bucket rate limit per client address, with the clock passed in."""

from __future__ import annotations

import math


class RateLimiter:
    """`rate` requests per second per key, bursts up to `burst`; rate 0 disables the limit."""

    _MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, now: float) -> float:
        """0 when allowed; otherwise the seconds to wait before the next request is allowed."""
        if self.rate <= 0:
            return 0.0
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._put(key, tokens - 1.0, now)
            return 0.0
        self._put(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def _put(self, key: str, tokens: float, now: float) -> None:
        """Keeps the buckets in least-recently-used order; at the bound, forgets the one idle
        longest. (Clearing them all, as before, let a client with many addresses reset the
        bucket of every throttled one.)"""
        if self._buckets.pop(key, None) is None and len(self._buckets) >= self._MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
