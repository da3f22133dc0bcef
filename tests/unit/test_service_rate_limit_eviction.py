"""Issue 9, also decided: at its bound the rate limiter forgets the bucket idle longest, not all."""

from __future__ import annotations

import pytest

from apitoken_service.rate_limit import RateLimiter


def test_many_addresses_do_not_reset_a_throttled_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RateLimiter, "_MAX_KEYS", 10)
    limiter = RateLimiter(rate=0.001, burst=1)
    assert limiter.acquire("attacker", 0.0) == 0.0
    assert limiter.acquire("attacker", 0.0) > 0
    for i in range(100):  # churn through many other addresses, the attacker still knocking
        limiter.acquire(f"10.0.0.{i}", 1.0)
        assert limiter.acquire("attacker", 1.0) > 0
    assert len(limiter._buckets) <= 10
