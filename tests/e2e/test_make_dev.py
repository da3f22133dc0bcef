"""`make dev` (python -m localkube): a usable cluster in the foreground, cleaned up on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localkube.controlplane import REPO, use_existing_cluster

pytestmark = pytest.mark.e2e


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed in {timeout:.0f}s:\n{''.join(seen)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(use_existing_cluster(), reason="starts its own control plane by design")
def test_dev_serves_a_cluster_kubectl_can_use_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localkube", "--dev-dir", str(dev_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        banner = _read_until(proc, "Ctrl-C stops everything", timeout=180)
        kubeconfig = dev_dir / "kubeconfig"
        assert f"kubeconfig   {kubeconfig}" in banner
        pids = [int(p) for p in re.findall(r"\[(\d+)\]", banner)]
        assert len(pids) == 3, banner  # etcd, kube-apiserver, kube-controller-manager

        kubectl = Path(sys.executable).parent / "kubectl"
        got = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert {"namespace/default", "namespace/kube-system"} <= set(got.stdout.split())
        crds = subprocess.run(
            [
                str(kubectl),
                "--kubeconfig",
                str(kubeconfig),
                "api-resources",
                "-o",
                "name",
                "--api-group=apitoken.dev",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "apitokens.apitoken.dev" in crds.stdout.split()

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "stopped and cleaned up" in out
        assert not kubeconfig.exists()
        assert not (dev_dir / "controlplane").exists()
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
