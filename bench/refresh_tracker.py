"""What the managed Secrets show over time, measured outside the operator (pure, clock passed in).

The bench feeds every Secret update from one watch into a `SecretTracker`; it keeps each
Secret's current access token (its token id, `iat`, `exp` and the refresh the operator planned
for it) and records each refresh: when it was planned and when the new access token appeared.
An access token that expired before its successor appeared is an expiry episode, measured
exactly at the update (or at `finish`), not at a sampling tick.

The planned time is the operator's own rule (`core.schedule.next_refresh_time`, imported, not
restated) applied to the access token: `expires_at` is the Secret's `expires_at` key as the
operator parses it; `obtained_at` is the operator's own record of when it asked, the Secret's
`apitoken.dev/refreshed-at` annotation written with the values, else (a Secret without it) the
access token's `iat` (the service's issue time: later than the operator's record by the call's
duration, queueing included, so such a plan reads late by up to a third of that). The plan the
operator declares next to it (`apitoken.dev/next-refresh-at`) is kept too, to check the bench's
plan against (`plan_check`), never used as the plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from apitoken_operator.core.schedule import TimingPolicy, next_refresh_time
from apitoken_operator.providers.answers import parse_rfc3339
from bench.stats import percentile

# (token id, obtained at, the Secret's expires_at text) -> planned refresh, epoch seconds
Plan = Callable[[str, float, str], float]


def operator_plan(policy: TimingPolicy, refresh_percent: int) -> Plan:
    def plan(token_id: str, obtained: float, expires_at: str) -> float:
        return next_refresh_time(
            obtained_at=datetime.fromtimestamp(obtained, UTC),
            expires_at=parse_rfc3339(expires_at),
            refresh_percent=refresh_percent,
            token_id=token_id,
            policy=policy,
        ).timestamp()

    return plan


def unverified_claims(access_token: str) -> dict[str, object]:
    """The JWT's claims without verifying the signature (a bench only reads iat and exp)."""
    claims: dict[str, object] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


@dataclass(frozen=True, slots=True)
class AccessToken:
    token_id: str
    iat: float
    exp: float
    expires_at: str
    planned: float
    planned_from_record: bool = False
    declared: float | None = None  # the operator's next-refresh-at annotation


@dataclass(frozen=True, slots=True)
class Refresh:
    name: str
    planned: float  # when the operator planned to replace the previous access token
    issued: float  # the new access token's iat (the service's clock, whole seconds)
    seen: float  # when the watch delivered the Secret holding it
    planned_from_record: bool = False  # else from the previous access token's iat

    @property
    def lateness(self) -> float:
        return self.seen - self.planned


@dataclass
class SecretTracker:
    plan: Plan
    current: dict[str, AccessToken] = field(default_factory=dict)
    refreshes: list[Refresh] = field(default_factory=list)
    reissues: int = 0
    reissue_times: list[float] = field(default_factory=list)
    # Access tokens that expired before their successor appeared, and the worst age past exp.
    expired_episodes: int = 0
    expired_secrets: set[str] = field(default_factory=set)
    worst_expired_age: float = 0.0
    most_expired_at_once: int = 0

    def observe(
        self,
        name: str,
        token_id: str,
        iat: float,
        expires_at: str,
        seen: float,
        *,
        obtained: float | None = None,
        declared: float | None = None,
    ) -> None:
        """A Secret update: its access token (`iat`, `expires_at`), the operator's record of
        when it obtained it (`obtained`) and the refresh it declares (`declared`), if any."""
        exp = parse_rfc3339(expires_at).timestamp()
        start = iat if obtained is None else obtained
        planned = self.plan(token_id, start, expires_at)
        new = AccessToken(token_id, iat, exp, expires_at, planned, obtained is not None, declared)
        prev = self.current.get(name)
        if prev is not None and (prev.token_id, prev.exp) == (token_id, exp):
            return  # another write of the same access token (labels, annotations)
        self.current[name] = new
        if prev is None:
            return
        if prev.exp <= seen:
            self._expired(name, seen - prev.exp)
        if prev.token_id != token_id:
            self.reissues += 1
            self.reissue_times.append(seen)
        elif exp > prev.exp:
            refresh = Refresh(name, prev.planned, iat, seen, prev.planned_from_record)
            self.refreshes.append(refresh)

    def forget(self, name: str) -> None:
        self.current.pop(name, None)

    def plan_check(self) -> dict[str, float]:
        """The bench's plan minus the one the operator declares, for the access tokens the
        Secrets hold now: checks that the bench applies the operator's rule (the operator
        rounds up to a whole second)."""
        diffs = [t.planned - t.declared for t in self.current.values() if t.declared is not None]
        if not diffs:
            return {"compared": 0}
        return {"compared": len(diffs), "min_s": min(diffs), "max_s": max(diffs)}

    def check(self, now: float) -> tuple[int, float]:
        """(how many Secrets hold an expired access token now, the oldest one's age)."""
        count, oldest = 0, 0.0
        for token in self.current.values():
            if token.exp <= now:
                count += 1
                oldest = max(oldest, now - token.exp)
        self.most_expired_at_once = max(self.most_expired_at_once, count)
        return count, oldest

    def overdue(self, now: float, grace: float) -> int:
        """Secrets whose planned refresh is more than `grace` seconds past."""
        return sum(1 for t in self.current.values() if t.planned + grace < now)

    def planned_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.current.values() if start <= t.planned < end)

    def finish(self, now: float) -> None:
        """Close the episodes still open at the end of the run."""
        for name, token in self.current.items():
            if token.exp <= now:
                self._expired(name, now - token.exp)

    def _expired(self, name: str, age: float) -> None:
        self.expired_episodes += 1
        self.expired_secrets.add(name)
        self.worst_expired_age = max(self.worst_expired_age, age)

    def between(self, start: float, end: float) -> list[Refresh]:
        """The refreshes that appeared in [start, end)."""
        return [r for r in self.refreshes if start <= r.seen < end]


def busiest_second(issued: Iterable[float], start: float, end: float) -> dict[str, Any]:
    """Refreshes per whole second of the service's clock (the `iat` of each new access token)
    over the full seconds inside [start, end): the busiest second, the mean, and their ratio."""
    first, last = int(-(-start // 1)), int(end // 1)  # ceil(start), floor(end)
    seconds = last - first
    if seconds <= 0:
        return {"seconds": 0, "count": 0, "mean": 0.0, "busiest": 0, "ratio": float("nan")}
    bins = [0] * seconds
    for t in issued:
        i = int(t) - first
        if 0 <= i < seconds:
            bins[i] += 1
    total = sum(bins)
    mean = total / seconds
    busiest = max(bins)
    # Where the busiest seconds were (seconds from the window's start): a burst after a
    # restart and a clump in the steady schedule look alike in the ratio alone.
    top = sorted(range(seconds), key=lambda i: -bins[i])[:5]
    return {
        "seconds": seconds,
        "count": total,
        "mean": mean,
        "busiest": busiest,
        "ratio": busiest / mean if mean else float("nan"),
        "busiest_at_s": [[i, bins[i]] for i in top],
    }


def cpu_windows(
    samples: Iterable[tuple[float, int, float]], start: float, end: float
) -> dict[str, float]:
    """Cores used between consecutive (time, pid, cpu seconds) samples of the same process
    inside [start, end): the mean over the windows (total CPU / total time) and the busiest."""
    inside = [s for s in samples if start <= s[0] <= end]
    cpu = span = 0.0
    busiest = 0.0
    for (t0, pid0, c0), (t1, pid1, c1) in itertools.pairwise(inside):
        if pid0 != pid1 or t1 <= t0:
            continue  # a restart between the samples
        cpu += c1 - c0
        span += t1 - t0
        busiest = max(busiest, (c1 - c0) / (t1 - t0))
    return {
        "windows_s": span,
        "mean_core": cpu / span if span else float("nan"),
        "max_core": busiest if span else float("nan"),
    }


def lateness(refreshes: Iterable[Refresh]) -> dict[str, float]:
    """Seconds from the planned time to the new access token's appearance: p50, p99, max
    (nearest rank; negative is early)."""
    refreshes = list(refreshes)
    ordered = sorted(r.lateness for r in refreshes)
    from_record = sum(1 for r in refreshes if r.planned_from_record)
    if not ordered:
        return {"count": 0, "p50_s": float("nan"), "p99_s": float("nan"), "max_s": float("nan")}
    return {
        "count": len(ordered),
        "planned_from_record": from_record,
        "p50_s": percentile(ordered, 50),
        "p99_s": percentile(ordered, 99),
        "max_s": ordered[-1],
    }
