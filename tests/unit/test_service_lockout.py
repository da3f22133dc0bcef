"""The sign-in lockout rule and the password rule (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from apitoken_service.domain.accounts import lock_after
from apitoken_service.passwords import password_problem

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "locked_for"),
    [(0, None), (5, None), (6, 30), (7, 60), (8, 120), (10, 480), (11, 900), (40, 900)],
)
def test_five_free_failures_then_a_doubling_lock_of_at_most_15_minutes(
    failures: int, locked_for: int | None
) -> None:
    expected = None if locked_for is None else NOW + timedelta(seconds=locked_for)
    assert lock_after(failures, NOW) == expected


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 12 characters"),
        ("x" * 257, "at most 256 characters"),
        ("twelve chars\x00!", "no control characters"),
        ("a fine passphrase", None),
    ],
)
def test_password_rule(password: str, problem: str | None) -> None:
    assert password_problem(password) == problem
