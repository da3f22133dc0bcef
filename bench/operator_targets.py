"""The targets of issue 11, items 3-6, judged from one run's results (pure): rows of
(target, measured, met) and the Markdown table the bench prints at the end."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MB = 1000 * 1000
# Writes that are not reconciles: the leader's Lease renewals (and the apiserver's own Leases,
# which the metric does not tell apart).
NOT_RECONCILE_RESOURCES = ("leases",)


def secret_writes(writes: Mapping[str, int]) -> int:
    return sum(v for k, v in writes.items() if k.split("/")[1:] == ["secrets"])


def status_writes(writes: Mapping[str, int]) -> int:
    return sum(v for k, v in writes.items() if k.endswith("/apitokens/status"))


def reconcile_writes(writes: Mapping[str, int]) -> int:
    return sum(v for k, v in writes.items() if k.split("/")[1] not in NOT_RECONCILE_RESOURCES)


def by_verb(writes: Mapping[str, int]) -> str:
    return ", ".join(f"{k.replace('/', ' ', 1)} {v}" for k, v in sorted(writes.items())) or "none"


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _one_per_refresh(writes: int, refreshes: float) -> bool:
    # Window edges: a refresh counted at the service just before the end whose Secret write
    # lands after it (or the reverse at the start).
    return abs(writes - refreshes) <= max(2.0, 0.01 * refreshes)


def _machine_work(r: Mapping[str, Any]) -> str:
    """The machine's CPU seconds in each phase (every process), when measured."""
    conv, base = r.get("convergence_machine_cpu_s"), r.get("baseline_machine_cpu_s")
    if not (conv and base):
        return ""
    return f" (machine CPU {conv:.0f} s against {base:.0f} s: {conv / base:.2f}x)"


def rows(r: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    n = r["tokens"]
    if "ratio" in r:
        out.append(
            (
                f"Convergence of {n:,} within 1.5x the baseline",
                f"operator {r['convergence_s']:.1f} s, baseline {r['baseline_s']:.1f} s: "
                f"{r['ratio']:.2f}x{_machine_work(r)}",
                _yes(r["ratio"] <= 1.5),
            )
        )
    if "writes_baseline_s" in r and "convergence_s" in r:
        writes_base = r["writes_baseline_s"]
        out.append(
            (
                "Convergence against a script making the operator's own calls (no target)",
                f"operator {r['convergence_s']:.1f} s, that script {writes_base:.1f} s: "
                f"{r['convergence_s'] / writes_base:.2f}x; that script against the baseline: "
                f"{writes_base / r['baseline_s']:.2f}x",
                "",
            )
        )
    idle = r.get("idle")
    if idle:
        valid = idle["refreshes"] == 0
        w = reconcile_writes(idle["writes"])
        out.append(
            (
                "Zero writes per idle reconcile (idle window, no refresh due)",
                f"{w} writes in {idle['window_s']} s (all: {by_verb(idle['writes'])}; Lease "
                f"writes not counted), {idle['refreshes']:.0f} refreshes in the window",
                _yes(w == 0) if valid else "n/a (refreshes in the window)",
            )
        )
    after = r.get("after_restart")
    if after and after["refreshes"] == 0:
        w = reconcile_writes(after["writes"])
        out.append(
            (
                "Zero writes per idle reconcile (the restarted operator's reconciles, no "
                "refresh due)",
                f"{w} writes in {after['window_s']:.0f} s after the restart of {n:,} ApiTokens "
                f"(all: {by_verb(after['writes'])}; Lease writes not counted)",
                _yes(w == 0),
            )
        )
    exp = r.get("expiry")
    if exp:
        out.append(
            (
                "No Secret ever holds an expired access token",
                f"{exp['episodes']} expired access tokens in {exp['secrets']} Secrets over "
                f"{exp['observed_s']:.0f} s, worst {exp['worst_age_s']:.1f} s past exp, "
                f"at most {exp['most_at_once']} at once",
                _yes(exp["episodes"] == 0),
            )
        )
    for key, label in (("steady", "steady window"), ("after_restart", "after the restart")):
        win = r.get(key)
        if not win:
            continue
        late, busy = win["lateness"], win["per_second"]
        # Issue 11 sets the lateness target for the steady state only; after a restart the
        # refreshes that fell due meanwhile are late by the restart's seconds, spread on
        # purpose (the catch-up), so that row is shown without a verdict.
        steady_state = key == "steady"
        out += [
            (
                f"Refresh lateness p99 under 5 s ({label})"
                if steady_state
                else f"Refresh lateness ({label}; no target)",
                f"p50 {_num(late['p50_s'])} s, p99 {_num(late['p99_s'])} s, max "
                f"{_num(late['max_s'])} s over {late['count']} refreshes",
                (_yes(late["p99_s"] < 5) if late["count"] else "n/a") if steady_state else "",
            ),
            (
                f"Busiest second of refreshes under twice the mean ({label})",
                f"busiest {busy['busiest']}/s, mean {_num(busy['mean'])}/s: "
                f"{_num(busy['ratio'])}x over {busy['seconds']} s (service's clock)",
                _yes(busy["ratio"] < 2) if busy["count"] else "n/a",
            ),
        ]
    steady = r.get("steady")
    if steady:
        cpu = steady["cpu"]
        out.append(
            (
                "Operator CPU under half a core (steady window)",
                f"mean {_num(cpu['mean_core'], '.3f')}, busiest 10 s "
                f"{_num(cpu['max_core'], '.3f')} core",
                _yes(cpu["mean_core"] < 0.5) if cpu["windows_s"] else "n/a",
            )
        )
        refreshes = steady["refreshes"]
        # Secret updates with a new access token, seen by the watch at the moments the write
        # counters are read (the service's count also holds calls whose write is in flight).
        landed = steady.get("refreshes_seen", refreshes) + steady.get("reissues", 0)
        sw, st = secret_writes(steady["writes"]), status_writes(steady["writes"])
        out.append(
            (
                "Exactly one Secret write per refresh (steady window)",
                f"{sw} Secret writes for {landed:.0f} new access tokens in Secrets "
                f"({refreshes:.0f} refreshes answered by the service)",
                _yes(_one_per_refresh(sw, landed)) if landed else "n/a",
            )
        )
        out.append(
            (
                "No status write unless a reported field changed (steady window)",
                f"{st} status writes for {refreshes:.0f} refreshes (a routine refresh changes "
                "no status field: the access token's times are on the Secret)",
                _yes(st <= max(2.0, 0.01 * refreshes)) if refreshes else "n/a",
            )
        )
    # The process that ran the whole steady window (a restarted one has a fresh peak).
    mem = r.get("rss_steady_kib") or r.get("rss_end_kib")
    if mem:
        out.append(
            (
                f"Resident memory under 200 MB (at {n:,} ApiTokens)",
                f"VmRSS {mem['VmRSS'] * 1024 / MB:.0f} MB, VmHWM {mem['VmHWM'] * 1024 / MB:.0f} "
                "MB at the end of the steady window",
                _yes(mem["VmHWM"] * 1024 < 200 * MB),
            )
        )
    restart = r.get("restart")
    if restart:
        drained = restart.get("drained_s")
        ready = restart.get("ready_s")
        out.append(
            (
                "Operator restart: back to Ready, no refresh overdue (no target)",
                f"stopped in {restart['stop_s']:.1f} s, leading again {restart['start_s']:.1f} s "
                f"later; from SIGTERM: no refresh overdue > 5 s at {_num(drained, '.1f')} s, "
                f"every ApiToken Ready at {_num(ready, '.1f')} s",
                "",
            )
        )
    if "bench_cpu_s" in r:
        during = ", ".join(
            f"{r[k]['bench_cpu_core']:.3f} core {label}"
            for k, label in (("steady", "in the steady window"), ("after_restart", "after it"))
            if k in r
        )
        out.append(
            (
                "The bench's own CPU (no target: it shares the machine with the operator)",
                f"{r['bench_cpu_s']:.1f} s in all" + (f"; {during}" if during else ""),
                "",
            )
        )
    if "replays" in r:
        out.append(
            (
                "No refresh token replayed",
                f"{r['replays']:.0f} at the service",
                _yes(r["replays"] == 0),
            )
        )
    return out


def markdown(table: list[tuple[str, str, str]]) -> str:
    lines = ["| Target | Measured | Met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in table]
    return "\n".join(lines)
