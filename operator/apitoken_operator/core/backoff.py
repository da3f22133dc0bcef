"""Capped exponential backoff with jitter for retries of failed token-service calls."""

from datetime import timedelta


def backoff_delay(attempt: int, *, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Delay before retry number `attempt` (1 for the first retry).

    The ceiling doubles from `base` up to `cap`; "equal jitter" then keeps half of it fixed and
    spreads the other half by `jitter` (a fraction in [0, 1), from a random source or a stable
    hash), so retries of many tokens do not arrive together and never come back-to-back.
    """
    if attempt < 1:
        return timedelta(0)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1): {jitter}")
    # Doubling past the cap is pointless and 2**attempt overflows timedelta for large attempts.
    ceiling = cap if attempt > 62 else min(cap, base * (2 ** (attempt - 1)))
    half = ceiling / 2
    return half + half * jitter
