"""The clock of the unit tests: a fixed origin `T0` and `Clock`, a settable now. The code under
test takes the clock as an argument, so a test sets the time instead of waiting for it."""

from datetime import UTC, datetime

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


__all__ = ["T0", "Clock"]
