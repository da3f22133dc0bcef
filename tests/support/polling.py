"""Polling for tests against processes that act asynchronously (controllers, the operator)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25
) -> T:
    """Poll until `probe` returns something truthy and return it; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
