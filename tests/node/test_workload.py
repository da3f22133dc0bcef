"""examples/04-workload on the real node: the Deployment's Pod re-reads its mounted Secret and
sees every new access token the operator writes; the delay from the Secret's update to the Pod
reading the new token is measured (kubelet's sync period plus its Secret cache, plus the
example's 1 s re-read). Beside it, a Pod that takes the token from an environment variable
(secretKeyRef) and from a subPath mount keeps the first token for ever.

LOCALKUBE_KUBELET_SYNC_FREQUENCY (the node's kubelet, default 2s here) and
APITOKEN_WORKLOAD_TTL (the access tokens' life, default 10 s) let the same test measure
kubelet's default: `LOCALKUBE_KUBELET_SYNC_FREQUENCY=1m APITOKEN_WORKLOAD_TTL=120`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Pod, Secret

from apitoken_operator.crd.durations import parse_duration
from localkube import Cluster
from localkube.examples import apply_example
from localkube.node import SYNC_FREQUENCY
from localkube.tokenservice import WorkspaceCredential
from support.operator import (
    RunningOperator,
    ServiceAdmin,
    eventually,
    merge_patch,
    release_leftovers,
)
from support.tokenservice import RunningTokenService, start_token_service

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "04-workload"
KUBECTL = Path(sys.executable).parent / "kubectl"
SECRET = "reports-api"
TTL = int(os.environ.get("APITOKEN_WORKLOAD_TTL", "10"))
SYNC = parse_duration(SYNC_FREQUENCY).total_seconds()
NEW_TOKENS = 3  # tokens after the first that the Pod must see

# The token as an environment variable: resolved once, when the container is created.
TOKEN_ENV = {
    "name": "ACCESS_TOKEN",
    "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "access_token"}},
}


def python_pod(script: str, **container: Any) -> dict[str, Any]:
    """A Pod spec running `script` in the operator's image as the chart's user."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": "localhost/apitoken-operator:0.1.0",
                "command": ["python3", "-c", script],
                **container,
            }
        ],
    }


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}


# The anti-patterns, for contrast: the same Secret as an environment variable and as a subPath
# mount, and, as the control inside the same Pod, the whole volume.
PITFALLS_SCRIPT = """
import hashlib, os, pathlib, time
fp = lambda b: hashlib.sha256(b).hexdigest()[:12]
last = None
while True:
    seen = (
        fp(os.environ["ACCESS_TOKEN"].encode()),
        fp(pathlib.Path("/subpath/access_token").read_bytes()),
        fp(pathlib.Path("/volume/access_token").read_bytes()),
    )
    if seen != last:
        print("env %s subpath %s volume %s" % seen, flush=True)
        last = seen
    time.sleep(1)
"""
PITFALLS = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pitfalls"},
    "spec": {
        **python_pod(
            PITFALLS_SCRIPT,
            env=[TOKEN_ENV],
            volumeMounts=[
                {"name": "token", "mountPath": "/subpath/access_token", "subPath": "access_token"},
                {"name": "token", "mountPath": "/volume"},
            ],
        ),
        "volumes": [{"name": "token", "secret": {"secretName": SECRET}}],
    },
}


def fingerprint(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:12]


@pytest.fixture(scope="module")
def e2e_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTokenService]:
    """This module's token service (support.operator's fixtures use it): access tokens of TTL
    seconds, so that kubelet's sync period is shorter than a token's time in the Secret."""
    with start_token_service(tmp_path_factory.mktemp("svc"), access_token_ttl=TTL) as running:
        yield running


class SecretVersions:
    """When each new access token reached the apiserver, from a watch on the Secret (seen on
    this host, the clock the container runtime stamps the Pod's log lines with)."""

    def __init__(self, kube: Client, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self.values: set[str] = set()
        self._stop = threading.Event()
        args = (kube, namespace)
        threading.Thread(target=self._watch, args=args, daemon=True).start()

    def _watch(self, kube: Client, namespace: str) -> None:
        with contextlib.suppress(Exception):  # the watch ends with the test, however it ends
            for _, secret in kube.watch(
                Secret, namespace=namespace, fields={"metadata.name": SECRET}
            ):
                if self._stop.is_set():
                    return
                encoded = (secret.data or {}).get("access_token")
                if encoded:
                    value = base64.b64decode(encoded)
                    self.values.add(value.decode())
                    self.seen.setdefault(fingerprint(value), time.time())

    def stop(self) -> None:
        self._stop.set()


def logged(cluster: Cluster, namespace: str, what: str) -> list[tuple[float, str]]:
    """(time, text) of each line `what` logged, stamped by the container runtime."""
    argv = [str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace]
    done = subprocess.run(
        [*argv, "logs", "--timestamps", what],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = []
    for line in done.stdout.splitlines():
        stamp, _, text = line.partition(" ")
        # RFC 3339 with nanoseconds: microseconds are enough here.
        when = datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
        lines.append((when, text))
    return lines


def test_workload_sees_each_new_access_token_and_env_and_subpath_do_not(
    cluster: Cluster,
    kube: Client,
    namespace: str,
    running_operator: RunningOperator,
    service_admin: ServiceAdmin,
) -> None:
    running_operator.wait_ready()
    versions = SecretVersions(kube, namespace)
    credential = service_admin.new_bootstrap_value(f"operator-{namespace}")
    try:
        applied = apply_example(
            kube,
            EXAMPLE,
            namespace,
            service_admin.service.base_url,
            lambda _ws: WorkspaceCredential(service_admin.service.workspace, credential),
        )
        assert [d["kind"] for d in applied if d["kind"] == "Deployment"] == ["Deployment"]
        eventually("the Secret's first access token", lambda: versions.seen, timeout=60)
        kube.create(from_dict(in_namespace(PITFALLS, namespace)))

        def workload_tokens() -> list[tuple[float, str]]:
            return [
                (when, text.split()[-1])
                for when, text in logged(cluster, namespace, "deploy/reports")
                if text.startswith("access token ")
            ]

        def enough() -> bool:
            return len(workload_tokens()) >= 1 + NEW_TOKENS

        eventually(
            f"the workload to read {1 + NEW_TOKENS} access tokens",
            enough,
            timeout=60 + (NEW_TOKENS + 1) * (TTL + SYNC * 1.5 + 5),
        )
        read = workload_tokens()
        pitfalls = [text for _, text in logged(cluster, namespace, "pitfalls")]
    finally:
        versions.stop()
        release_leftovers(kube, namespace)

    # Each token the Pod printed is one the Secret held, and it printed every one the Secret
    # held in between (none skipped: each lived longer than kubelet's sync).
    order = list(versions.seen)
    printed = [fp for _, fp in read]
    assert set(printed) <= set(order), (printed, order)
    span = order[order.index(printed[0]) : order.index(printed[-1]) + 1]
    assert printed == span, (printed, span)
    # The delay from the Secret's update to the Pod's read, for every token after the first
    # (the first was there before the Pod started).
    delays = [when - versions.seen[fp] for when, fp in read[1:]]
    assert all(d < SYNC * 1.5 + 10 for d in delays), delays
    # The figure for docs/usage.md (shown with pytest -s).
    sys.stderr.write(
        f"\nsyncFrequency {SYNC_FREQUENCY}, access tokens {TTL} s: Secret update to the Pod's "
        f"read {min(delays):.1f}-{max(delays):.1f} s (median {statistics.median(delays):.1f} s, "
        f"{len(delays)} refreshes)\n"
    )

    # The environment variable and the subPath mount kept the token the Pod started with, while
    # the volume in the same Pod moved on.
    columns = [line.split() for line in pitfalls]
    assert columns and all(c[0] == "env" for c in columns), pitfalls
    assert len({c[1] for c in columns}) == 1, "the environment variable changed"
    assert len({c[3] for c in columns}) == 1, "the subPath mount changed"
    assert len({c[5] for c in columns}) >= 2, f"the volume did not change: {pitfalls}"
    assert columns[0][1] == columns[0][3] == columns[0][5]

    # Fingerprints only: no token value in either log.
    text = "\n".join(pitfalls + printed)
    assert not [v[:6] for v in versions.values if v in text]


ENV_SCRIPT = """
import hashlib, os, time
value = os.environ["ACCESS_TOKEN"].encode()
print("env", hashlib.sha256(value).hexdigest()[:12], flush=True)
time.sleep(3600)
"""
ENV_READER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "env-reader"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "env-reader"}},
        "template": {
            "metadata": {"labels": {"app": "env-reader"}},
            "spec": python_pod(ENV_SCRIPT, env=[TOKEN_ENV]),
        },
    },
}


def test_rollout_restart_on_reissue_gives_an_env_reader_the_new_token(
    cluster: Cluster,
    kube: Client,
    namespace: str,
    running_operator: RunningOperator,
    service_admin: ServiceAdmin,
) -> None:
    """The remedy for a workload that reads the token once: listed in rolloutRestartTargets, it
    is restarted when the token is re-issued (its new Pod starts with the new token), and
    never on a refresh (the same Pod stays through refreshes)."""
    running_operator.wait_ready()
    versions = SecretVersions(kube, namespace)
    credential = service_admin.new_bootstrap_value(f"operator-{namespace}")

    def pods() -> list[str]:
        found = kube.list(Pod, namespace=namespace, labels={"app": "env-reader"})
        return sorted(
            str(p.metadata.name)
            for p in found
            if p.metadata
            and not p.metadata.deletionTimestamp
            and p.status
            and p.status.phase == "Running"
        )

    try:
        apply_example(
            kube,
            EXAMPLE,
            namespace,
            service_admin.service.base_url,
            lambda _ws: WorkspaceCredential(service_admin.service.workspace, credential),
        )
        merge_patch(
            kube,
            namespace,
            {"spec": {"rolloutRestartTargets": [{"kind": "Deployment", "name": "env-reader"}]}},
            name=SECRET,
        )
        eventually("the Secret's first access token", lambda: versions.seen, timeout=60)
        kube.create(from_dict(in_namespace(ENV_READER, namespace)))
        (first_pod,) = eventually("the env reader's Pod", lambda: pods() or None, timeout=60)
        first_token = set(versions.seen)
        # Refreshes come and go; the Pod stays.
        eventually("two refreshes", lambda: len(versions.seen) >= len(first_token) + 2, 60)
        assert pods() == [first_pod]

        merge_patch(
            kube,
            namespace,
            {"metadata": {"annotations": {"apitoken.dev/reissue": "now"}}},
            name=SECRET,
        )

        def restarted() -> str | None:
            running = [p for p in pods() if p != first_pod]
            return running[0] if len(running) == 1 and first_pod not in pods() else None

        new_pod = eventually("a new env reader Pod after the re-issue", restarted, timeout=90)
        printed = eventually(
            "the new Pod's line",
            lambda: [t for _, t in logged(cluster, namespace, f"pod/{new_pod}")] or None,
            timeout=30,
        )
        # It started with a token the Secret held after the re-issue, and not the first one.
        fp = printed[0].split()[-1]
        assert fp in versions.seen and fp not in first_token
    finally:
        versions.stop()
        release_leftovers(kube, namespace)
