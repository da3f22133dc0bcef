"""Helpers for the node tests: a chart release installed with the real helm into the test
cluster, kubectl as the cluster admin, and a Pod watch that records how many Pods ran at once."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lightkube import ApiError, Client
from lightkube.core.client import LabelSelector
from lightkube.resources.core_v1 import Namespace, Pod

from localkube import Cluster
from support.helm import Helm, helm_binary

KUBECTL = Path(sys.executable).parent / "kubectl"


def kubectl(
    cluster: Cluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def can_i(cluster: Cluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i --as=<ServiceAccount>`: the API server's own RBAC answer."""
    done = kubectl(cluster, "auth", "can-i", verb, resource, "-n", namespace, f"--as={account}")
    assert done.stdout.strip() in ("yes", "no"), done.stdout + done.stderr
    return done.stdout.strip() == "yes"


@dataclass
class Release:
    """One Helm release of a chart in the test cluster; `apply` installs or upgrades it."""

    helm: Helm
    cluster: Cluster
    name: str
    namespace: str

    def _where(self) -> tuple[str, ...]:
        return ("--kubeconfig", str(self.cluster.kubeconfig), "--namespace", self.namespace)

    def apply(self, *values: str, timeout: int = 120) -> None:
        sets = [arg for value in values for arg in ("--set", value)]
        self.helm.run(
            "upgrade",
            "--install",
            self.name,
            str(self.helm.chart),
            *self._where(),
            "--create-namespace",
            "--skip-crds",
            "--wait",
            "--timeout",
            f"{timeout}s",
            *sets,
            timeout=timeout + 60,
        )

    def uninstall(self, *, wait: bool = True) -> None:
        waiting = ("--wait", "--timeout", "60s") if wait else ()
        self.helm.run("uninstall", self.name, *self._where(), *waiting, check=False)


@contextlib.contextmanager
def chart_release(
    cluster: Cluster,
    kube: Client,
    chart: Path,
    name: str,
    namespace: str,
    home: Path,
    *,
    wait: bool = True,
) -> Iterator[Release]:
    """A release to `apply`; afterwards uninstalled and its namespace deleted."""
    release = Release(Helm(helm_binary(), home, chart), cluster, name, namespace)
    try:
        yield release
    finally:
        release.uninstall(wait=wait)
        with contextlib.suppress(ApiError):
            kube.delete(Namespace, namespace)


@dataclass
class PodWatch:
    """Every Pod of a label selector seen by one watch, and the most that were running at once
    (a Pod counts from its first event until it is deleted or reaches Succeeded/Failed)."""

    client: Client
    namespace: str
    labels: LabelSelector
    names: list[str] = field(default_factory=list)
    most_at_once: int = 0
    synced: threading.Event = field(default_factory=threading.Event)
    _live: set[str] = field(default_factory=set)
    _thread: threading.Thread | None = None

    def start(self, existing: int) -> None:
        """Watch from now; returns once the watch has reported the `existing` Pods."""

        def run() -> None:
            # The watch ends when the test's cluster goes; only what it saw until then counts.
            with contextlib.suppress(Exception):
                self._follow(existing)

        self._thread = threading.Thread(target=run, name="pod-watch", daemon=True)
        self._thread.start()
        assert self.synced.wait(30), "the Pod watch reported no Pod"

    def _follow(self, existing: int) -> None:
        for kind, pod in self.client.watch(
            Pod, namespace=self.namespace, labels=self.labels, server_timeout=300
        ):
            assert pod.metadata is not None and pod.metadata.name is not None
            name = pod.metadata.name
            if name not in self.names:
                self.names.append(name)
            phase = pod.status.phase if pod.status else None
            if kind == "DELETED" or phase in ("Succeeded", "Failed"):
                self._live.discard(name)
            else:
                self._live.add(name)
            self.most_at_once = max(self.most_at_once, len(self._live))
            if len(self.names) >= existing:
                self.synced.set()
