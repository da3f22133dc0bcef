"""The benchmark's statistics: nearest-rank percentiles and run summaries."""

from __future__ import annotations

import math

import pytest
from bench.stats import LatencySummary, percentile, rate_per_second

pytestmark = pytest.mark.unit

HUNDRED = [float(v) for v in range(1, 101)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param(HUNDRED, 50, 50.0, id="median-of-1..100-is-50"),
        pytest.param(HUNDRED, 99, 99.0, id="p99-of-1..100-is-99"),
        pytest.param(HUNDRED, 100, 100.0, id="p100-is-the-maximum"),
        pytest.param(HUNDRED, 0.5, 1.0, id="tiny-q-is-the-minimum"),
        pytest.param([7.0], 99.9, 7.0, id="one-value"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.0, id="even-count-no-interpolation"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 51, 3.0, id="just-past-half-takes-next-rank"),
        pytest.param([float(v) for v in range(1, 1001)], 99.9, 999.0, id="p999-of-1000"),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0, -1, 100.1], ids=["zero", "negative", "above-100"])
def test_percentile_refuses_q_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile(HUNDRED, q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summary_sorts_and_converts_seconds_to_milliseconds() -> None:
    latencies_s = [v / 1000 for v in reversed(HUNDRED)]  # 100 ms down to 1 ms, unsorted
    summary = LatencySummary.from_seconds(latencies_s)
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(50.0)
    assert summary.p99_ms == pytest.approx(99.0)
    assert summary.max_ms == pytest.approx(100.0)


def test_summary_of_no_requests_has_no_percentiles() -> None:
    summary = LatencySummary.from_seconds([])
    assert summary.count == 0
    assert math.isnan(summary.p99_ms)


@pytest.mark.parametrize(
    ("count", "elapsed_s", "expected"),
    [(3000, 1.5, 2000.0), (0, 1.0, 0.0), (10, 0.0, 0.0)],
    ids=["per-second", "no-events", "empty-window"],
)
def test_rate_per_second(count: int, elapsed_s: float, expected: float) -> None:
    assert rate_per_second(count, elapsed_s) == expected
