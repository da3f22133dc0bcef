"""`python -m bench.operator_bench`: the operator at size (issue 11, items 3-6).

One run starts the local control plane and a token service, then measures, in this order:
  1. baseline: a plain asyncio script doing the operator's work for N ApiTokens (create the
     ApiToken, create the token at the service, create the Secret, patch the status) with the
     same concurrency against the same apiserver and service;
  2. convergence: the real `apitoken-operator run` process, N ApiTokens applied at once, time
     until every one is Ready with its Secret;
  3. memory: the operator's resident memory (VmRSS, VmHWM) once converged and after the idle
     window;
  4. API economy: Kubernetes writes by verb and resource, from the apiserver's own
     `apiserver_request_total`, over an idle window (--idle-seconds; no refresh due when the
     access tokens live long, e.g. --access-token-ttl 3600) and per refresh in the steady
     window (refreshes counted at the token service);
  5. steady state (--steady-seconds): from one watch of the managed Secrets (bench/
     steady_watch.py, bench/refresh_tracker.py), each refresh's lateness against the time the
     operator's own rule planned it, every expired access token (exactly, with its age past
     exp), the busiest second of refreshes on the service's clock against the mean; the
     operator's CPU in 10 s windows and its memory at the end of the window;
  6. restart (--restart-after, --after-restart-seconds): SIGTERM the operator, start it again,
     time until it leads, until no refresh is overdue and every ApiToken is Ready, and the
     figures of step 5 over the window after it (with long access tokens: the writes of the
     restarted operator's reconciles, which should be none).
A table of the targets (issue 11 items 3-6) closes the output; --json FILE keeps everything.
The load average is printed next to each figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from lightkube import AsyncClient, Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hack"))

from apitoken_operator.core.schedule import TimingPolicy  # noqa: E402
from apitoken_operator.crd.durations import parse_duration  # noqa: E402
from apitoken_operator.crd.resources import DEFAULT_REFRESH_PERCENT  # noqa: E402
from apitoken_operator.kube.resources import ApiToken  # noqa: E402
from bench.jobs import bounded, timed  # noqa: E402
from bench.machine import cpu_by_role, cpu_spent, machine_busy_seconds  # noqa: E402
from bench.operator_targets import markdown, rows  # noqa: E402
from bench.refresh_tracker import (  # noqa: E402
    SecretTracker,
    busiest_second,
    cpu_windows,
    lateness,
    operator_plan,
)
from bench.steady_watch import CpuSampler, SecretWatch, cpu_seconds  # noqa: E402
from bench.writes_baseline import writes_baseline  # noqa: E402
from localkube import start_control_plane  # noqa: E402
from localkube.binaries import locate  # noqa: E402
from support.operator import ServiceAdmin, create_workspace, start_operator  # noqa: E402
from support.tokenservice import start_token_service  # noqa: E402

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY")
# Reads by request (a watch is one long request, not counted).
READ_VERBS = ("GET", "LIST")
COUNTED_RESOURCES = ("secrets", "apitokens", "tokenworkspaces", "events", "leases")
PREFIX = "tok-"
NAMESPACE = "bench-operator"
WRITES_NAMESPACE = "bench-writes"
# A planned refresh this far past is overdue (the lateness target's bound).
OVERDUE_GRACE_S = 5.0
# How long --py-spy-restart samples the restarted operator (the catch-up took 131 s at 10,000).
RESTART_SPY_S = 180


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", flush=True)


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def apiserver_requests(kubeconfig: Path) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total for the counted verbs and resources, from one scrape:
    (verb, resource, subresource) -> count."""
    text = subprocess.run(
        [str(locate().kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") not in WRITE_VERBS + READ_VERBS:
            continue
        if labels.get("resource") not in COUNTED_RESOURCES:
            continue
        key = (labels["verb"], labels["resource"], labels.get("subresource", ""))
        counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def of_verbs(
    counts: Counter[tuple[str, str, str]], verbs: tuple[str, ...]
) -> Counter[tuple[str, str, str]]:
    return Counter({k: v for k, v in counts.items() if k[0] in verbs})


def apiserver_writes(kubeconfig: Path) -> Counter[tuple[str, str, str]]:
    return of_verbs(apiserver_requests(kubeconfig), WRITE_VERBS)


def service_counts(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, float] = {"token_200": 0.0, "create_201": 0.0, "replays": 0.0}
    for line in text.splitlines():
        if line.startswith("apitoken_service_http_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            value = float(line.rsplit(" ", 1)[1])
            if labels.get("route") == "/oauth2/token" and labels.get("status") == "200":
                out["token_200"] += value
            if labels.get("route", "").endswith("/tokens") and labels.get("status") == "201":
                out["create_201"] += value
        elif line.startswith("apitoken_service_refresh_replays_total "):
            out["replays"] = float(line.rsplit(" ", 1)[1])
    return out


def diff(
    after: Counter[tuple[str, str, str]], before: Counter[tuple[str, str, str]]
) -> dict[str, int]:
    return {"/".join(filter(None, k)): v - before[k] for k, v in after.items() if v - before[k]}


def spec(name: str) -> dict[str, Any]:
    return {"workspaceRef": {"name": "main"}, "lifetimeDays": 30, "secretName": name}


async def apply_tokens(kubeconfig: Path, namespace: str, count: int, concurrency: int) -> None:
    client = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager="bench")

    def one(i: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            name = f"tok-{i:05d}"
            meta = ObjectMeta(name=name, namespace=namespace)
            await client.create(ApiToken(metadata=meta, spec=spec(name)))

        return job

    try:
        await bounded(concurrency, [one(i) for i in range(count)])
    finally:
        await client.close()


async def baseline(
    kubeconfig: Path, namespace: str, admin: ServiceAdmin, count: int, concurrency: int
) -> float:
    """The same work without Kopf: create ApiToken, token at the service, Secret, status."""
    client = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager="bench-baseline")
    bearer = admin._bearer()
    url = f"{admin.service.base_url}/api/v1/workspaces/{admin.service.workspace}/tokens"
    limits = httpx.Limits(max_keepalive_connections=0)
    http = httpx.AsyncClient(timeout=30, limits=limits)

    def one(i: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            name = f"tok-{i:05d}"
            meta = ObjectMeta(name=name, namespace=namespace)
            created = await client.create(ApiToken(metadata=meta, spec=spec(name)))
            uid = created.metadata.uid if created.metadata else ""
            response = await http.post(
                url,
                json={"name": name, "lifetimeDays": 30, "externalRef": uid},
                headers=bearer,
            )
            response.raise_for_status()
            body = response.json()
            await client.create(
                Secret(
                    metadata=ObjectMeta(name=name, namespace=namespace),
                    stringData={
                        "access_token": body["accessToken"],
                        "refresh_token": body["refreshToken"],
                    },
                )
            )
            await client.patch(
                ApiToken.Status,
                name,
                {
                    "status": {
                        "tokenId": body["id"],
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "Issued",
                                "message": "baseline",
                                "lastTransitionTime": time.strftime(
                                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
                                ),
                            }
                        ],
                    }
                },
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )

        return job

    return await timed(concurrency, [one(i) for i in range(count)], client, http)


def ready_tokens(kube: Client, namespace: str) -> int:
    ready = 0
    for obj in kube.list(ApiToken, namespace=namespace):
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                ready += 1
    return ready


def py_spy_format(path: Path) -> str:
    """speedscope for .json, collapsed stacks for .txt (to sum by function), else a flamegraph."""
    return {".json": "speedscope", ".txt": "raw"}.get(path.suffix, "flamegraph")


def spy_on(pid: int, path: Path, seconds: int | None = None) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `path` until interrupted (or for `seconds`)."""
    duration = [] if seconds is None else ["-d", str(seconds)]
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "-p",
            str(pid),
            "-o",
            str(path),
            "-f",
            py_spy_format(path),
            "--nonblocking",
            *duration,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finite(value: Any) -> Any:
    """NaN (a figure without samples) as null, so that the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


class Snapshot:
    """Counters at one moment: apiserver writes and reads, the service's answers, this
    process's CPU."""

    def __init__(self, kubeconfig: Path, base_url: str) -> None:
        self.mono, self.wall = time.monotonic(), time.time()
        counts = apiserver_requests(kubeconfig)
        self.writes = of_verbs(counts, WRITE_VERBS)
        self.reads = of_verbs(counts, READ_VERBS)
        self.service = service_counts(base_url)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.bench_cpu = usage.ru_utime + usage.ru_stime


def window(
    a: Snapshot, b: Snapshot, tracker: SecretTracker, cpu: CpuSampler | None
) -> dict[str, Any]:
    """The figures of the window between two snapshots."""
    refreshes = b.service["token_200"] - a.service["token_200"]
    writes = diff(b.writes, a.writes)
    span = b.mono - a.mono
    seen = tracker.between(a.wall, b.wall)
    out: dict[str, Any] = {
        "window_s": round(span, 1),
        "refreshes": refreshes,
        "refreshes_seen": len(seen),
        "replays": b.service["replays"] - a.service["replays"],
        "reissues": sum(1 for t in tracker.reissue_times if a.wall <= t < b.wall),
        "writes": writes,
        "writes_per_refresh": {k: v / refreshes for k, v in writes.items()} if refreshes else {},
        # Not a target: what runs read live (a refresh from kept bodies reads nothing); the
        # bench's own lists of ApiTokens while it waits for Ready count too (not in the steady
        # window).
        "reads": diff(b.reads, a.reads),
        "lateness": lateness(seen),
        "per_second": busiest_second((r.issued for r in tracker.refreshes), a.wall, b.wall),
        "bench_cpu_core": (b.bench_cpu - a.bench_cpu) / span if span else float("nan"),
        "load": load(),
    }
    if cpu is not None:
        out["cpu"] = cpu_windows(list(cpu.samples), a.mono, b.mono)
    return out


def sleep_until(deadline: float, watch: SecretWatch, tracker: SecretTracker) -> None:
    """Sleep to `deadline` (monotonic), printing the Secrets' state every 30 s."""
    last = time.monotonic()
    while (now := time.monotonic()) < deadline:
        time.sleep(min(1.0, deadline - now))
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            with watch.lock:
                expired, oldest = watch.expired_now
                overdue = tracker.overdue(time.time(), OVERDUE_GRACE_S)
                count = len(tracker.refreshes)
            say(
                f"steady: {count} refreshes seen, {expired} expired now (oldest {oldest:.1f} s), "
                f"{overdue} overdue > {OVERDUE_GRACE_S:.0f} s"
            )


def restart_operator(
    op: Any,
    kube: Client,
    n: int,
    watch: SecretWatch,
    tracker: SecretTracker,
    until: float,
    spy: Path | None = None,
) -> dict[str, Any]:
    """SIGTERM the operator, start it again; time until it leads again, until no refresh is
    overdue by more than the grace, and until every ApiToken is Ready (polled sparsely).
    With `spy`, py-spy samples the new process's first RESTART_SPY_S seconds as the leader."""
    sigterm = time.monotonic()
    op.process.send_signal(signal.SIGTERM)
    op.process.wait(timeout=120)
    stopped = time.monotonic()
    op.start_again()
    leading = time.monotonic()
    spying = spy_on(op.process.pid, spy, RESTART_SPY_S) if spy else None
    say(f"restart: stopped in {stopped - sigterm:.1f}s, leading {leading - stopped:.1f}s later")
    out: dict[str, Any] = {
        "stop_s": stopped - sigterm,
        "start_s": leading - stopped,
        "drained_s": None,
        "ready_s": None,
        "most_overdue": 0,
    }
    every = max(2.0, n / 1000)
    next_ready = time.monotonic()
    while time.monotonic() < until and out["ready_s"] is None:
        with watch.lock:
            overdue = tracker.overdue(time.time(), OVERDUE_GRACE_S)
        out["most_overdue"] = max(out["most_overdue"], overdue)
        if out["drained_s"] is None and overdue == 0:
            out["drained_s"] = time.monotonic() - sigterm
        if out["drained_s"] is not None and time.monotonic() >= next_ready:
            next_ready = time.monotonic() + every
            if ready_tokens(kube, NAMESPACE) >= n:
                out["ready_s"] = time.monotonic() - sigterm
        time.sleep(1)
    say(f"restart: {out}")
    if spying is not None:
        spying.wait(timeout=RESTART_SPY_S + 60)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--access-token-ttl", type=int, default=300)
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--steady-seconds", type=int, default=0)
    parser.add_argument(
        "--restart-after",
        type=int,
        default=None,
        help="SIGTERM and start the operator again this many seconds into the steady phase "
        "(ends the steady window)",
    )
    parser.add_argument(
        "--after-restart-seconds",
        type=int,
        default=None,
        help="the window measured after the restart (default: to the end of the steady phase, "
        "or 600 s if the restart is at its end)",
    )
    parser.add_argument("--convergence-timeout", type=int, default=1800)
    parser.add_argument(
        "--writes-baseline",
        action="store_true",
        help="after the convergence, also time a script making the operator's own calls per "
        "ApiToken (bench/writes_baseline.py); with long-lived access tokens and no steady "
        "phase the operator is idle meanwhile",
    )
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="write a py-spy profile of the convergence here"
    )
    parser.add_argument(
        "--py-spy-restart",
        type=Path,
        default=None,
        help=f"write a py-spy profile of the restarted operator's first {RESTART_SPY_S} s here",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the operator's and service's logs here"
    )
    args = parser.parse_args(argv)
    n, conc = args.tokens, args.concurrency
    if args.restart_after is not None and not 0 < args.restart_after <= args.steady_seconds:
        parser.error("--restart-after needs 0 < SECONDS <= --steady-seconds")
    results: dict[str, Any] = {
        "tokens": n,
        "concurrency": conc,
        "ttl": args.access_token_ttl,
        "argv": sys.argv[1:] if argv is None else argv,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_at_start": load(),
    }
    margin = os.environ.get("BENCH_REFRESH_MARGIN", "60s")
    policy = TimingPolicy(refresh_margin=parse_duration(margin))
    results["refresh_margin"] = margin

    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        root = Path(tmp)
        with (
            start_control_plane(state_dir=root / "kube", log=say) as cluster,
            start_token_service(
                root / "tokenservice", access_token_ttl=args.access_token_ttl
            ) as service,
            httpx.Client(
                base_url=service.base_url,
                timeout=30,
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as http,
        ):
            kube = cluster.client()
            admin = ServiceAdmin(service, http, refresh_token=service.credential["refreshToken"])
            for ns in ("bench-baseline", WRITES_NAMESPACE, NAMESPACE):
                kube.create(Namespace(metadata=ObjectMeta(name=ns)))

            say(f"baseline: {n} ApiTokens, concurrency {conc}")
            busy0, roles0 = machine_busy_seconds(), cpu_by_role()
            base_s = asyncio.run(baseline(cluster.kubeconfig, "bench-baseline", admin, n, conc))
            results["baseline_s"] = base_s
            results["baseline_machine_cpu_s"] = machine_busy_seconds() - busy0
            results["baseline_cpu_by_role_s"] = cpu_spent(roles0, cpu_by_role())
            results["baseline_load"] = load()
            say(f"baseline done in {base_s:.1f}s, CPU {results['baseline_cpu_by_role_s']}")

            env = {
                "APITOKEN_OPERATOR_NAMESPACE": NAMESPACE,
                # The default 2 min margin; the e2e fast settings would refresh every second.
                "APITOKEN_OPERATOR_REFRESH_MARGIN": margin,
                "APITOKEN_OPERATOR_RECHECK_INTERVAL": "10m",
                # Any operator setting in the bench's environment, to compare settings.
                **{k: v for k, v in os.environ.items() if k.startswith("APITOKEN_OPERATOR_")},
            }
            with start_operator(
                root / "operator", cluster.kubeconfig, namespaces=(NAMESPACE,), env=env
            ) as op:
                # The operator logs every HTTP request with --verbose; that is not its normal
                # cost. Restart it without it.
                op.argv = [a for a in op.argv if a != "--verbose"]
                op.restart(crash=False)
                create_workspace(
                    kube,
                    NAMESPACE,
                    url=service.base_url,
                    service_workspace=service.workspace,
                    bootstrap_value=admin.new_bootstrap_value(NAMESPACE),
                )
                results["rss_idle_kib"] = rss_kib(op.process.pid)
                say(f"operator ready, pid {op.process.pid}, {results['rss_idle_kib']}")
                tracker = SecretTracker(operator_plan(policy, DEFAULT_REFRESH_PERCENT))
                watch = SecretWatch(kube, NAMESPACE, PREFIX, tracker)
                watch.start()
                cpu = CpuSampler(lambda: int(op.process.pid))
                observed_from = time.time()
                converge(args, op, kube, cluster.kubeconfig, watch, results)
                if args.writes_baseline:
                    # After the convergence, so that the convergence meets the store the
                    # baseline left, as it does without this one (run O ran it before and
                    # converged slower than any run).
                    time_writes_baseline(args, cluster.kubeconfig, admin, results)

                cpu.start()
                if args.idle_seconds:
                    idle_window(args, op, cluster.kubeconfig, service.base_url, results, watch, cpu)
                if args.steady_seconds:
                    steady_phase(
                        args,
                        op,
                        kube,
                        cluster.kubeconfig,
                        service.base_url,
                        results,
                        watch,
                        tracker,
                        cpu,
                    )
                now = time.time()
                with watch.lock:
                    tracker.finish(now)
                    results["expiry"] = {
                        "observed_s": now - observed_from,
                        "episodes": tracker.expired_episodes,
                        "secrets": len(tracker.expired_secrets),
                        "worst_age_s": tracker.worst_expired_age,
                        "most_at_once": tracker.most_expired_at_once,
                        "reissues": tracker.reissues,
                        "watch_events": watch.events,
                        "watch_errors": watch.errors,
                    }
                    results["plan_vs_declared"] = tracker.plan_check()
                watch.stop()
                cpu.stop()
                results["rss_end_kib"] = rss_kib(op.process.pid)
                results["replays"] = service_counts(service.base_url)["replays"]
                usage = resource.getrusage(resource.RUSAGE_SELF)
                results["bench_cpu_s"] = usage.ru_utime + usage.ru_stime
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in (root / "operator").glob("*.log"):
                    shutil.copy(log, args.keep_logs / log.name)
                for log in (root / "tokenservice").rglob("*.log"):
                    shutil.copy(log, args.keep_logs / f"tokenservice-{log.name}")
    table = rows(results)
    results["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in table]
    results = finite(results)
    print(json.dumps(results, indent=2), flush=True)
    print(f"\nAt {n:,} ApiTokens, access tokens {args.access_token_ttl} s, margin {margin}:\n")
    print(markdown(table), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def converge(
    args: argparse.Namespace,
    op: Any,
    kube: Client,
    kubeconfig: Path,
    watch: SecretWatch,
    results: dict[str, Any],
) -> None:
    """Apply N ApiTokens at once; until every one is Ready and its Secret holds a token."""
    n, conc, pid = args.tokens, args.concurrency, op.process.pid
    spy = spy_on(pid, args.py_spy) if args.py_spy else None
    cpu0 = cpu_seconds(pid)
    busy0, roles0 = machine_busy_seconds(), cpu_by_role()
    writes0 = apiserver_writes(kubeconfig)
    started = time.monotonic()
    asyncio.run(apply_tokens(kubeconfig, NAMESPACE, n, conc))
    say(f"applied {n} in {time.monotonic() - started:.1f}s")
    # A list of every ApiToken costs this process CPU too: sparser at size.
    every = max(2.0, n / 1000)
    ready = 0
    while True:
        with watch.lock:
            secrets = len(watch.tracker.current)
        if secrets >= n:
            ready = ready_tokens(kube, NAMESPACE)
            if ready >= n:
                break
        if time.monotonic() - started > args.convergence_timeout:
            say(f"TIMEOUT: {ready} ready, {secrets} secrets")
            break
        time.sleep(every)
    conv_s = time.monotonic() - started
    results["convergence_s"] = conv_s
    results["convergence_ready"] = ready
    results["convergence_cpu_s"] = cpu_seconds(pid) - cpu0
    # Every process's CPU: on a machine the phase keeps busy, the ratio of the two phases'
    # work bounds the ratio of their times (docs/benchmarks.md).
    results["convergence_machine_cpu_s"] = machine_busy_seconds() - busy0
    results["convergence_cpu_by_role_s"] = cpu_spent(roles0, cpu_by_role())
    results["convergence_load"] = load()
    # Includes the bench's own N ApiToken creates.
    results["convergence_writes"] = diff(apiserver_writes(kubeconfig), writes0)
    results["ratio"] = conv_s / results["baseline_s"]
    results["rss_converged_kib"] = rss_kib(pid)
    say(
        f"converged {ready}/{n} in {conv_s:.1f}s (x{results['ratio']:.2f} of "
        f"baseline), rss {results['rss_converged_kib']}, CPU {results['convergence_cpu_by_role_s']}"
    )
    if spy is not None:
        spy.send_signal(2)
        spy.wait(timeout=60)


def time_writes_baseline(
    args: argparse.Namespace, kubeconfig: Path, admin: ServiceAdmin, results: dict[str, Any]
) -> None:
    busy0, roles0 = machine_busy_seconds(), cpu_by_role()
    writes_s = asyncio.run(
        writes_baseline(kubeconfig, WRITES_NAMESPACE, admin, args.tokens, args.concurrency, spec)
    )
    results["writes_baseline_s"] = writes_s
    results["writes_baseline_machine_cpu_s"] = machine_busy_seconds() - busy0
    results["writes_baseline_cpu_by_role_s"] = cpu_spent(roles0, cpu_by_role())
    say(f"the operator's calls' baseline done in {writes_s:.1f}s")


def idle_window(
    args: argparse.Namespace,
    op: Any,
    kubeconfig: Path,
    base_url: str,
    results: dict[str, Any],
    watch: SecretWatch,
    cpu: CpuSampler,
) -> None:
    """A window in which no refresh of an ApiToken is due when the access tokens live long
    (`--access-token-ttl 3600`); the refreshes counted at the service show whether it was."""
    time.sleep(5)
    a = Snapshot(kubeconfig, base_url)
    with watch.lock:
        planned = watch.tracker.planned_between(a.wall, a.wall + args.idle_seconds)
    time.sleep(args.idle_seconds)
    b = Snapshot(kubeconfig, base_url)
    idle = window(a, b, watch.tracker, cpu)
    idle["window_s"] = args.idle_seconds
    idle["planned_refreshes"] = planned
    results["idle"] = idle
    results["rss_after_idle_kib"] = rss_kib(op.process.pid)
    say(f"idle: writes {idle['writes']}, refreshes {idle['refreshes']} ({planned} planned)")


def steady_phase(
    args: argparse.Namespace,
    op: Any,
    kube: Client,
    kubeconfig: Path,
    base_url: str,
    results: dict[str, Any],
    watch: SecretWatch,
    tracker: SecretTracker,
    cpu: CpuSampler,
) -> None:
    """The steady window, then (with --restart-after) the operator restarted and the window
    after it."""
    begin = time.monotonic()
    restart_at = args.restart_after or args.steady_seconds
    a = Snapshot(kubeconfig, base_url)
    sleep_until(begin + restart_at, watch, tracker)
    cpu.sample()
    b = Snapshot(kubeconfig, base_url)
    steady = window(a, b, tracker, cpu)
    results["steady"] = steady
    results["rss_steady_kib"] = rss_kib(op.process.pid)
    say(
        f"steady window: {steady['refreshes']:.0f} refreshes, lateness {steady['lateness']}, "
        f"per second {steady['per_second']}, cpu {steady['cpu']}, bench cpu "
        f"{steady['bench_cpu_core']:.3f} core, writes {steady['writes']}"
    )
    if args.restart_after is None:
        return
    after = args.after_restart_seconds
    if after is None:
        after = args.steady_seconds - args.restart_after or 600
    until = time.monotonic() + after
    results["restart"] = restart_operator(
        op, kube, args.tokens, watch, tracker, until, args.py_spy_restart
    )
    sleep_until(until, watch, tracker)
    cpu.sample()
    c = Snapshot(kubeconfig, base_url)
    results["after_restart"] = window(b, c, tracker, cpu)
    say(f"after restart: {results['after_restart']}")


if __name__ == "__main__":
    raise SystemExit(main())
