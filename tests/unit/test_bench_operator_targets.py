"""The operator bench's summary: each target of issue 11 items 3-6 judged from a run's results."""

from __future__ import annotations

from typing import Any

import pytest
from bench.operator_targets import markdown, reconcile_writes, rows, secret_writes, status_writes

pytestmark = pytest.mark.unit


def window(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "window_s": 900.0,
        "refreshes": 1000.0,
        "writes": {"APPLY/secrets": 1000, "PATCH/apitokens/status": 2, "PUT/leases": 450},
        "lateness": {"count": 1000, "p50_s": 0.5, "p99_s": 3.0, "max_s": 6.0},
        "per_second": {"seconds": 900, "count": 1000, "mean": 1.1, "busiest": 2, "ratio": 1.8},
        "cpu": {"windows_s": 890.0, "mean_core": 0.2, "max_core": 0.7},
    }
    base.update(over)
    return base


def results(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tokens": 10000,
        "baseline_s": 100.0,
        "convergence_s": 140.0,
        "ratio": 1.4,
        "idle": window(refreshes=0.0, writes={"PUT/leases": 60}, window_s=120),
        "expiry": {
            "observed_s": 1600.0,
            "episodes": 0,
            "secrets": 0,
            "worst_age_s": 0.0,
            "most_at_once": 0,
        },
        "steady": window(),
        "after_restart": window(),
        "restart": {"stop_s": 1.0, "start_s": 2.0, "drained_s": 20.0, "ready_s": 25.0},
        "rss_end_kib": {"VmRSS": 150_000, "VmHWM": 180_000},
        "replays": 0.0,
    }
    base.update(over)
    return base


def met(table: list[tuple[str, str, str]], start: str) -> list[str]:
    return [ok for target, _, ok in table if target.startswith(start)]


def test_writes_by_kind() -> None:
    writes = {
        "APPLY/secrets": 3,
        "PATCH/secrets": 1,
        "PATCH/apitokens/status": 2,
        "PATCH/apitokens": 5,
        "PUT/leases": 9,
    }
    assert secret_writes(writes) == 4
    assert status_writes(writes) == 2
    assert reconcile_writes(writes) == 11  # everything but the Leases


def test_every_target_met() -> None:
    table = rows(results())
    assert {ok for _, _, ok in table} <= {"yes", ""}
    assert len(met(table, "Refresh lateness")) == 2
    assert len(met(table, "Busiest second")) == 2
    assert "| Convergence of 10,000 within 1.5x the baseline |" in markdown(table)


@pytest.mark.parametrize(
    ("over", "target"),
    [
        ({"ratio": 1.6}, "Convergence"),
        ({"expiry": {**results()["expiry"], "episodes": 1}}, "No Secret ever"),
        (
            {"steady": window(lateness={"count": 9, "p50_s": 1, "p99_s": 5.0, "max_s": 9})},
            "Refresh lateness p99 under 5 s (steady",
        ),
        (
            {
                "after_restart": window(
                    per_second={
                        "seconds": 600,
                        "count": 600,
                        "mean": 1.0,
                        "busiest": 2,
                        "ratio": 2.0,
                    }
                )
            },
            "Busiest second of refreshes under twice the mean (after",
        ),
        (
            {"steady": window(cpu={"windows_s": 10.0, "mean_core": 0.5, "max_core": 0.9})},
            "Operator CPU",
        ),
        ({"steady": window(writes={"APPLY/secrets": 1020})}, "Exactly one Secret write"),
        (
            {"steady": window(writes={"APPLY/secrets": 1000, "PATCH/apitokens/status": 1000})},
            "No status write",
        ),
        (
            {"idle": window(refreshes=0.0, writes={"PATCH/apitokens": 1}, window_s=120)},
            "Zero writes per idle reconcile (idle",
        ),
        ({"rss_end_kib": {"VmRSS": 150_000, "VmHWM": 200_000}}, "Resident memory"),
        ({"replays": 1.0}, "No refresh token replayed"),
    ],
)
def test_each_target_can_be_missed(over: dict[str, Any], target: str) -> None:
    assert met(rows(results(**over)), target) == ["**no**"]


def test_secret_writes_are_judged_against_the_tokens_that_landed() -> None:
    # 15 refreshes answered just before the window closed, their Secrets written after it.
    steady = window(refreshes=1015.0, refreshes_seen=998, reissues=2)
    assert met(rows(results(steady=steady)), "Exactly one Secret write") == ["yes"]
    steady = window(refreshes=1000.0, refreshes_seen=980, reissues=0)
    assert met(rows(results(steady=steady)), "Exactly one Secret write") == ["**no**"]


def test_a_window_that_cannot_judge_says_so() -> None:
    table = rows(
        results(
            idle=window(refreshes=3.0, writes={"APPLY/secrets": 3}, window_s=120),
            steady=window(
                refreshes=0.0,
                lateness={
                    "count": 0,
                    "p50_s": float("nan"),
                    "p99_s": float("nan"),
                    "max_s": float("nan"),
                },
            ),
        )
    )
    assert met(table, "Zero writes per idle reconcile (idle") == ["n/a (refreshes in the window)"]
    assert met(table, "Refresh lateness p99 under 5 s (steady") == ["n/a"]
    assert met(table, "Exactly one Secret write") == ["n/a"]


def test_a_restart_without_refreshes_judges_its_reconciles() -> None:
    quiet = window(refreshes=0.0, writes={"PUT/leases": 30, "PATCH/apitokens": 2})
    table = rows(results(after_restart=quiet))
    assert met(table, "Zero writes per idle reconcile (the restarted") == ["**no**"]
    quiet = window(refreshes=0.0, writes={"PUT/leases": 30})
    assert met(
        rows(results(after_restart=quiet)), "Zero writes per idle reconcile (the restarted"
    ) == ["yes"]


def test_the_convergence_row_names_the_machines_work_when_measured() -> None:
    measured = results(convergence_machine_cpu_s=300.0, baseline_machine_cpu_s=120.0)
    row = [m for t, m, _ in rows(measured) if t.startswith("Convergence")]
    assert row == [
        "operator 140.0 s, baseline 100.0 s: 1.40x (machine CPU 300 s against 120 s: 2.50x)"
    ]
    row = [m for t, m, _ in rows(results()) if t.startswith("Convergence")]
    assert row == ["operator 140.0 s, baseline 100.0 s: 1.40x"]


def test_the_baseline_with_the_operators_calls_splits_the_convergence_gap() -> None:
    table = rows(results(writes_baseline_s=125.0))
    (row,) = [m for t, m, _ in table if t.startswith("Convergence against a script")]
    assert "operator 140.0 s, that script 125.0 s: 1.12x" in row
    assert "against the baseline: 1.25x" in row
    assert not [t for t, _, _ in rows(results()) if t.startswith("Convergence against a script")]


def test_the_lateness_after_a_restart_is_shown_without_a_verdict() -> None:
    """Issue 11 sets the lateness target for the steady window; after a restart the catch-up
    delays the refreshes due meanwhile on purpose."""
    late = {"count": 1000, "p50_s": 0.5, "p99_s": 7.0, "max_s": 9.0}
    table = rows(results(after_restart=window(lateness=late)))
    assert met(table, "Refresh lateness (after the restart; no target)") == [""]
    assert met(table, "Refresh lateness p99 under 5 s (steady") == ["yes"]
