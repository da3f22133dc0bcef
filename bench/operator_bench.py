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
     `apiserver_request_total`, over an idle window (no refresh due) and over a refresh window
     (refreshes counted at the token service);
  5. steady state (optional, --steady-seconds): the operator's CPU, and every Secret's access
     token checked against its `exp` at the end.
The load average is printed next to each figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
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

from apitoken_operator.kube.resources import ApiToken  # noqa: E402
from localkube import start_control_plane  # noqa: E402
from localkube.binaries import locate  # noqa: E402
from support.operator import ServiceAdmin, create_workspace, start_operator  # noqa: E402
from support.tokenservice import start_token_service  # noqa: E402

WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY")


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


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


def apiserver_writes(kubeconfig: Path) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total for write verbs: (verb, resource, subresource) -> count."""
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
        if labels.get("verb") not in WRITE_VERBS:
            continue
        if labels.get("resource") not in ("secrets", "apitokens", "events"):
            continue
        key = (labels["verb"], labels["resource"], labels.get("subresource", ""))
        counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


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


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(run(j) for j in jobs))


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

    started = time.monotonic()
    try:
        await bounded(concurrency, [one(i) for i in range(count)])
    finally:
        await client.close()
        await http.aclose()
    return time.monotonic() - started


def ready_count(kube: Client, namespace: str) -> tuple[int, int]:
    ready = 0
    for obj in kube.list(ApiToken, namespace=namespace):
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                ready += 1
    secrets = sum(1 for _ in kube.list(Secret, namespace=namespace))
    return ready, secrets


def expired_access_tokens(kube: Client, namespace: str, now: float) -> tuple[int, int]:
    expired = checked = 0
    for secret in kube.list(Secret, namespace=namespace):
        raw = (secret.data or {}).get("access_token")
        if not raw:
            continue
        jwt = base64.b64decode(raw).decode()
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        checked += 1
        if claims["exp"] <= now:
            expired += 1
    return expired, checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--access-token-ttl", type=int, default=300)
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--steady-seconds", type=int, default=0)
    parser.add_argument("--convergence-timeout", type=int, default=1800)
    parser.add_argument("--py-spy", type=Path, default=None, help="write a py-spy profile here")
    args = parser.parse_args(argv)
    n, conc = args.tokens, args.concurrency
    results: dict[str, Any] = {"tokens": n, "concurrency": conc, "ttl": args.access_token_ttl}

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
            for ns in ("bench-baseline", "bench-operator"):
                kube.create(Namespace(metadata=ObjectMeta(name=ns)))

            say(f"baseline: {n} ApiTokens, concurrency {conc}")
            base_s = asyncio.run(baseline(cluster.kubeconfig, "bench-baseline", admin, n, conc))
            results["baseline_s"] = base_s
            results["baseline_load"] = load()
            say(f"baseline done in {base_s:.1f}s")

            env = {
                "APITOKEN_OPERATOR_NAMESPACE": "bench-operator",
                # The default 2 min margin; the e2e fast settings would refresh every second.
                "APITOKEN_OPERATOR_REFRESH_MARGIN": os.environ.get("BENCH_REFRESH_MARGIN", "60s"),
                "APITOKEN_OPERATOR_RECHECK_INTERVAL": "10m",
            }
            with start_operator(
                root / "operator", cluster.kubeconfig, namespaces=("bench-operator",), env=env
            ) as op:
                # The operator logs every HTTP request with --verbose; that is not its normal
                # cost. Restart it without it.
                op.argv = [a for a in op.argv if a != "--verbose"]
                op.restart(crash=False)
                pid = op.process.pid
                create_workspace(
                    kube,
                    "bench-operator",
                    url=service.base_url,
                    service_workspace=service.workspace,
                    bootstrap_value=admin.new_bootstrap_value("bench-operator"),
                )
                results["rss_idle_kib"] = rss_kib(pid)
                say(f"operator ready, pid {pid}, {results['rss_idle_kib']}")
                spy = None
                if args.py_spy:
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "-p",
                            str(pid),
                            "-o",
                            str(args.py_spy),
                            "-f",
                            "speedscope" if str(args.py_spy).endswith(".json") else "flamegraph",
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                cpu0 = cpu_seconds(pid)
                writes0 = apiserver_writes(cluster.kubeconfig)
                started = time.monotonic()
                asyncio.run(apply_tokens(cluster.kubeconfig, "bench-operator", n, conc))
                applied_s = time.monotonic() - started
                say(f"applied {n} in {applied_s:.1f}s")
                while True:
                    ready, secrets = ready_count(kube, "bench-operator")
                    if ready >= n and secrets >= n + 1:  # + the bootstrap Secret
                        break
                    if time.monotonic() - started > args.convergence_timeout:
                        say(f"TIMEOUT: {ready} ready, {secrets} secrets")
                        break
                    time.sleep(2)
                conv_s = time.monotonic() - started
                results["convergence_s"] = conv_s
                results["convergence_ready"] = ready
                results["convergence_cpu_s"] = cpu_seconds(pid) - cpu0
                results["convergence_load"] = load()
                # Includes the bench's own N ApiToken creates.
                results["convergence_writes"] = diff(apiserver_writes(cluster.kubeconfig), writes0)
                results["ratio"] = conv_s / base_s
                results["rss_converged_kib"] = rss_kib(pid)
                say(
                    f"converged {ready}/{n} in {conv_s:.1f}s (x{conv_s / base_s:.2f} of "
                    f"baseline), rss {results['rss_converged_kib']}"
                )
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=60)

                # Idle window: nothing due (access tokens live ttl, margin 60 s; window ends
                # before the first refresh when idle < ttl - margin - convergence).
                time.sleep(5)
                k0, s0, c0 = (
                    apiserver_writes(cluster.kubeconfig),
                    service_counts(service.base_url),
                    cpu_seconds(pid),
                )
                time.sleep(args.idle_seconds)
                k1, s1, c1 = (
                    apiserver_writes(cluster.kubeconfig),
                    service_counts(service.base_url),
                    cpu_seconds(pid),
                )
                results["idle_window_s"] = args.idle_seconds
                results["idle_writes"] = diff(k1, k0)
                results["idle_refreshes"] = s1["token_200"] - s0["token_200"]
                results["idle_cpu_core"] = (c1 - c0) / args.idle_seconds
                results["idle_load"] = load()
                results["rss_after_idle_kib"] = rss_kib(pid)
                say(
                    f"idle: writes {results['idle_writes']}, "
                    f"refreshes {results['idle_refreshes']}, "
                    f"cpu {results['idle_cpu_core']:.3f} core"
                )

                if args.steady_seconds:
                    k0, s0, c0 = k1, s1, c1
                    t0 = time.monotonic()
                    worst_expired = 0
                    samples = 0
                    while time.monotonic() - t0 < args.steady_seconds:
                        time.sleep(min(30, args.steady_seconds))
                        expired, checked = expired_access_tokens(
                            kube, "bench-operator", time.time()
                        )
                        worst_expired = max(worst_expired, expired)
                        samples += 1
                        say(f"steady: {expired}/{checked} expired access tokens")
                    span = time.monotonic() - t0
                    k1, s1, c1 = (
                        apiserver_writes(cluster.kubeconfig),
                        service_counts(service.base_url),
                        cpu_seconds(pid),
                    )
                    refreshes = s1["token_200"] - s0["token_200"]
                    writes = diff(k1, k0)
                    results["steady_s"] = span
                    results["steady_refreshes"] = refreshes
                    results["steady_writes"] = writes
                    results["steady_writes_per_refresh"] = (
                        {k: v / refreshes for k, v in writes.items()} if refreshes else {}
                    )
                    results["steady_cpu_core"] = (c1 - c0) / span
                    results["steady_expired_worst"] = worst_expired
                    results["steady_samples"] = samples
                    results["steady_load"] = load()
                    results["rss_steady_kib"] = rss_kib(pid)
                    results["replays"] = s1["replays"]
                    say(
                        "steady: "
                        + json.dumps({k: v for k, v in results.items() if k.startswith("steady")})
                    )
    print(json.dumps(results, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
