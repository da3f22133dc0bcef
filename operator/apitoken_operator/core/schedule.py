"""When to refresh the access token and when to re-issue the whole token (pure, clock passed in)."""

import hashlib
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class TimingPolicy(BaseModel):
    """Operator-wide timing knobs; tests shrink them to work with access tokens living seconds."""

    model_config = ConfigDict(frozen=True)

    # Refreshes are spread up to this many percentage points before spec.refreshPercent, a
    # 20-point window as kubelet's certificate rotation has (70-90 % of the life): ApiTokens
    # applied together refresh together every cycle after, and the jitter is what blurs
    # that; with 10 points the busiest second of 10,000 was still 1.98x the mean after four
    # cycles (docs/benchmarks.md, run N).
    refresh_jitter_percent: float = Field(default=20.0, ge=0, lt=100)
    # Never refresh later than this before the access token expires (capped at half its life,
    # so that a token living less than twice the margin is not refreshed in a loop).
    refresh_margin: timedelta = timedelta(minutes=2)
    # Retries of failed calls: capped exponential backoff with jitter.
    backoff_base: timedelta = timedelta(seconds=5)
    backoff_cap: timedelta = timedelta(minutes=5)
    # How often to look again at a token waiting for a person (missing workspace, conflict).
    recheck_interval: timedelta = timedelta(minutes=5)


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) derived from `parts`: jitter that survives restarts and replicas."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def next_refresh_time(
    *,
    obtained_at: datetime,
    expires_at: datetime,
    refresh_percent: int,
    token_id: str,
    policy: TimingPolicy,
) -> datetime:
    """When to refresh an access token obtained at `obtained_at` that expires at `expires_at`.

    At `refresh_percent` of its actual life, moved earlier by a jitter stable for this token and
    this access token, and never later than the refresh margin before expiry.
    """
    life = expires_at - obtained_at
    if life <= timedelta(0):
        return obtained_at
    jitter = policy.refresh_jitter_percent * stable_fraction(token_id, expires_at.isoformat())
    percent = max(refresh_percent - jitter, 1.0)
    planned = obtained_at + life * (percent / 100)
    latest = expires_at - min(policy.refresh_margin, life / 2)
    return min(planned, latest)


def renewal_time(*, refresh_expires_at: datetime, renew_before: timedelta) -> datetime:
    """When to re-issue the token: `renew_before` ahead of the refresh token's expiry."""
    return refresh_expires_at - renew_before
