"""`make dev`'s workload: examples/04-workload next to examples/01-basic, and the printed command
to follow its log, where the access token's fingerprint changes after a refresh.

make dev runs here on the session's cluster and node (USE_EXISTING_CLUSTER=true, --workload):
only one node runs on a machine at a time, and the session's node already holds it. That make
dev starts a node of its own is the same ControlPlane(node=True) the session uses."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from lightkube import Client

from e2e.test_make_dev import _start_dev, stop_and_check_removed
from localkube import Cluster
from support.operator import eventually

pytestmark = pytest.mark.node

WORKLOAD_NAMESPACE = "apitoken-dev-workload"


def test_dev_runs_the_workload_and_prints_how_to_follow_its_token(
    cluster: Cluster, kube: Client, tmp_path: Path
) -> None:
    proc, output = _start_dev(
        tmp_path / "dev",
        "--workload",
        USE_EXISTING_CLUSTER="true",
        KUBECONFIG=str(cluster.kubeconfig),
    )
    try:
        banner = output.wait_for("Ctrl-C stops everything", timeout=240)
        follow = re.search(rf"(\S+kubectl -n {WORKLOAD_NAMESPACE} logs) -f (deploy/\S+)", banner)
        assert follow, banner
        assert "not available yet" not in banner, banner
        # The printed command, without -f: its lines hold fingerprints, never values.
        command = f"{follow.group(1)} {follow.group(2)}"
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

        def fingerprints() -> list[str]:
            done = subprocess.run(
                command.split(), capture_output=True, text=True, timeout=30, env=env, check=False
            )
            found = re.findall(r"^access token ([0-9a-f]{12})$", done.stdout, re.M)
            return found

        # Access tokens of 20 s: a refresh within about 15 s, seen by the Pod seconds later.
        eventually(
            "the workload's fingerprint to change",
            lambda: len(set(fingerprints())) >= 2,
            timeout=90,
        )
        stop_and_check_removed(
            proc,
            output,
            kube,
            {"examples/01-basic": "apitoken-dev", "examples/04-workload": WORKLOAD_NAMESPACE},
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
