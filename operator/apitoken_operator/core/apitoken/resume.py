"""When an ApiToken found at start-up runs first (pure, clock passed in).

A restart finds every ApiToken at once. Running them all within seconds would be a storm (at
10,000, thousands of runs queued ahead of the refreshes falling due meanwhile), so their first
runs are spread over a window, and never later than what they already plan: the refresh the
managed Secret names (`apitoken.dev/next-refresh-at`, from the Secret watch's first listing)
and the re-issue the status names (`renewalTime`). A settled ApiToken, with nothing to do
before those, spreads over the idle recheck interval; any other over the short resume window.
Refreshes that fell due while no process led, and those falling due while the new process
digests its listings, are caught up spread evenly over a window once the listing is through.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from apitoken_operator.core.apitoken.decide import ApiTokenView
from apitoken_operator.core.managed_secret import ObservedSecret
from apitoken_operator.core.schedule import stable_fraction
from apitoken_operator.crd.resources import DeletionPolicy

READY = "Ready"


def settled(token: ApiTokenView) -> bool:
    """Whether the ApiToken has nothing to do before its planned refresh or re-issue: Ready
    for its current generation with no failure, enabled, and its Secret names it as owner (an
    Orphan policy's Secret does not, so the listing cannot give its plan)."""
    status = token.status
    ready = status.condition(READY)
    return (
        status.token_id is not None
        and ready is not None
        and ready.status == "True"
        and status.failed_refresh_attempts == 0
        and status.observed_generation == token.generation
        and not token.spec.disabled
        and token.spec.deletion_policy is not DeletionPolicy.ORPHAN
        and not token.deleting
    )


def listed_plan(secret: ObservedSecret, refresh_margin: timedelta) -> datetime | None:
    """The refresh a listed managed Secret plans: its next-refresh-at annotation, or for a
    Secret written before the annotation existed the latest moment the refresh rule allows
    (the refresh margin before the access token's expiry)."""
    if secret.next_refresh_at is not None:
        return secret.next_refresh_at
    expires = secret.access_token_expires_at
    return None if expires is None else expires - refresh_margin


def resume_due(
    key: str, now: datetime, *, window: timedelta, planned: tuple[datetime | None, ...]
) -> datetime:
    """Spread over `window` by a stable fraction of its key (a restart with thousands does not
    run them all at once), but never after a time already planned (a refresh or a re-issue
    that falls due)."""
    spread = now + window * stable_fraction("resume", key)
    return min([spread, *(p for p in planned if p is not None)])


def catch_up(
    key: str, plan: datetime, now: datetime, *, expires_at: datetime | None, window: timedelta
) -> datetime:
    """When to run a refresh planned at `plan`: then, or if that has passed (it fell due in
    the seconds a restart leaves without a leader) spread over `window` from now by a stable
    fraction of its key, and never later than halfway to the access token's expiry. Hundreds
    fall due in those seconds at 10,000 ApiTokens; run at once they were the busiest second
    after a restart (docs/benchmarks.md)."""
    if plan >= now:
        return plan
    return now + (_room(now, expires_at, window) - now) * stable_fraction("catch-up", key)


@dataclass(frozen=True)
class Listed:
    """A refresh a listed Secret plans, for the catch-up."""

    key: str
    plan: datetime
    expires_at: datetime | None


def _room(now: datetime, expires_at: datetime | None, window: timedelta) -> datetime:
    """`now + window`, but never later than halfway to the access token's expiry."""
    half = (expires_at - now) / 2 if expires_at is not None else timedelta(0)
    return now + max(min(window, half), timedelta(0))


def caught_up(plan: datetime, cut: datetime) -> bool:
    """Whether a listed refresh joins the catch-up: it falls due before the cut (the listing's
    start plus the catch-up window), in the seconds without a leader or those to come while
    the new process digests its listings."""
    return plan < cut


def held_back(item: Listed, now: datetime, end: datetime) -> datetime:
    """Where a refresh waits for the catch-up while the listing goes on: at the spread's end,
    no slot the catch-up gives is later (the queue keeps the sooner time), and never later
    than halfway to its access token's expiry."""
    return _room(now, item.expires_at, end - now)


def spread_evenly(items: Sequence[Listed], start: datetime, end: datetime) -> dict[str, datetime]:
    """The catch-up, decided once the listing is through: the refreshes it gathered (every
    one planned before `end`) run in the order of their plans, evenly spaced from `start` to
    `end`, so the most overdue go first, each no later than halfway to its access token's
    expiry. After `end` the plans go on as they were, so the window holds no more than its
    share plus the backlog: queued as each Secret was listed, the backlog ran when the event
    loop got free of the listing, together (a restart at 10,000 ApiTokens had a busiest
    second 2.3-3x the mean, docs/benchmarks.md, runs L to N)."""
    ordered = sorted(items, key=lambda item: (item.plan, item.key))
    step = (end - start) / len(ordered) if ordered else timedelta(0)
    return {
        item.key: min(start + step * i, _room(start, item.expires_at, end - start))
        for i, item in enumerate(ordered)
    }
