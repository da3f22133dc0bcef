"""Latency statistics: nearest-rank percentiles and a summary of one load run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of values sorted ascending.

    Nearest rank returns an observed value, never an interpolation, so a p99 of a run is a
    latency some request really had.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    # The epsilon keeps float error (99.9 / 100 * 1000 = 999.0000000000001) from adding a rank.
    rank = max(1, math.ceil(q * len(sorted_values) / 100 - 1e-9))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Latencies of successful requests in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, latencies_s: Sequence[float]) -> LatencySummary:
        if not latencies_s:
            return cls(
                count=0,
                p50_ms=math.nan,
                p90_ms=math.nan,
                p99_ms=math.nan,
                p999_ms=math.nan,
                max_ms=math.nan,
            )
        ordered = sorted(latencies_s)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p90_ms=percentile(ordered, 90) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            p999_ms=percentile(ordered, 99.9) * 1000,
            max_ms=ordered[-1] * 1000,
        )

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def rate_per_second(count: int, elapsed_s: float) -> float:
    """Events per second over a window; zero for an empty or degenerate window."""
    if count <= 0 or elapsed_s <= 0:
        return 0.0
    return count / elapsed_s
