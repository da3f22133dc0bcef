"""`python -m bench.memory_probe`: where the operator's memory per ApiToken goes.

Starts the local control plane, a token service and the operator under tracemalloc
(`bench/traced_operator.py`), takes a snapshot once the operator is ready and one once N
ApiTokens are Ready (and again after an idle pause), and prints the biggest growth between
them grouped by the allocating line and by the first frame in our code or in a library,
plus VmRSS. tracemalloc slows the operator down: the timings here mean nothing, use
`bench.operator_bench` for those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hack"))

from bench.operator_bench import apply_tokens, ready_tokens, rss_kib, say  # noqa: E402
from localkube import start_control_plane  # noqa: E402
from support.operator import ServiceAdmin, create_workspace, start_operator  # noqa: E402
from support.tokenservice import start_token_service  # noqa: E402

NS = "bench-operator"


def snapshot(pid: int, directory: Path, n: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    done = directory / f"{n}.done"
    while not done.exists():
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(directory / f"{n}.snap"))


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, tokens: int) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"\ntraced growth {total / 1024:.0f} KiB, {total / tokens / 1024:.1f} KiB per ApiToken")
    print("\nby file (top 25):")
    for stat in after.compare_to(before, "filename")[:25]:
        frame = stat.traceback[0]
        per = stat.size_diff / tokens
        print(f"  {stat.size_diff / 1024:9.0f} KiB {per:8.0f} B/token  {frame.filename}")
    print("\nby line (top 30):")
    for stat in after.compare_to(before, "lineno")[:30]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1024:9.0f} KiB  {frame.filename}:{frame.lineno}")
    print("\nby the first frame in apitoken_operator (top 20):")
    ours: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        where = next(
            (
                f"{f.filename}:{f.lineno}"
                for f in stat.traceback
                if "apitoken_operator" in f.filename
            ),
            "(not ours) " + stat.traceback[-1].filename,
        )
        ours[where] = ours.get(where, 0) + stat.size_diff
    for where, size in sorted(ours.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {size / 1024:9.0f} KiB  {where}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--idle-seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memory-probe-") as tmp:
        root = Path(tmp)
        snaps = root / "snaps"
        snaps.mkdir()
        with (
            start_control_plane(state_dir=root / "kube", log=say) as cluster,
            start_token_service(root / "tokenservice", access_token_ttl=3600) as service,
            httpx.Client(base_url=service.base_url, timeout=30) as http,
        ):
            kube = cluster.client()
            admin = ServiceAdmin(service, http, refresh_token=service.credential["refreshToken"])
            kube.create(Namespace(metadata=ObjectMeta(name=NS)))
            env = {
                "APITOKEN_OPERATOR_NAMESPACE": NS,
                "APITOKEN_OPERATOR_REFRESH_MARGIN": "60s",
                "APITOKEN_OPERATOR_RECHECK_INTERVAL": "10m",
                "TRACED_SNAPSHOT_DIR": str(snaps),
            }
            with start_operator(
                root / "operator", cluster.kubeconfig, namespaces=(NS,), env=env
            ) as op:
                traced = Path(__file__).with_name("traced_operator.py")
                op.argv = [
                    sys.executable,
                    str(traced),
                    *[a for a in op.argv[1:] if a != "--verbose"],
                ]
                op.restart(crash=False)
                pid = op.process.pid
                create_workspace(
                    kube,
                    NS,
                    url=service.base_url,
                    service_workspace=service.workspace,
                    bootstrap_value=admin.new_bootstrap_value(NS),
                )
                time.sleep(3)
                first = snapshot(pid, snaps, 1)
                say(f"operator ready, {rss_kib(pid)}")
                asyncio.run(apply_tokens(cluster.kubeconfig, NS, args.tokens, args.concurrency))
                while True:
                    ready = ready_tokens(kube, NS)
                    secrets = sum(1 for _ in kube.list(Secret, namespace=NS))
                    if ready >= args.tokens and secrets >= args.tokens + 1:  # + the bootstrap
                        break
                    time.sleep(2)
                converged = snapshot(pid, snaps, 2)
                say(f"converged, {rss_kib(pid)}")
                time.sleep(args.idle_seconds)
                idle = snapshot(pid, snaps, 3)
                say(f"after idle, {rss_kib(pid)}")
                os.kill(pid, signal.SIGUSR2)
                while not (snaps / "trimmed").exists():
                    time.sleep(0.2)
                say(f"after malloc_trim(0), {rss_kib(pid)}")
                print("\n=== ready -> converged")
                report(first, converged, args.tokens)
                print("\n=== ready -> after idle")
                report(first, idle, args.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
