"""Workloads named in spec.rolloutRestartTargets, and reading their restart annotation."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet

RESTARTED_AT = "apitoken.dev/restartedAt"
KINDS: dict[str, Any] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}
# Runs on the node when the session has one (the pause image is always imported there).
IMAGE = "localhost/pause:apitoken"


def create_workload(kube: Client, namespace: str, kind: str, name: str) -> None:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never"}]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    body = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    kube.create(from_dict(body))


def restarted_at(kube: Client, namespace: str, kind: str, name: str) -> str | None:
    obj = kube.get(KINDS[kind], name, namespace=namespace)
    meta = obj.spec.template.metadata if obj.spec else None
    return ((meta.annotations if meta else None) or {}).get(RESTARTED_AT)


class TemplateHistory:
    """Every restart annotation value a Deployment's pod template had, from a watch (a poll
    could miss a value set and replaced within a second)."""

    def __init__(self, kube: Client, namespace: str, name: str) -> None:
        self.values: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(kube, namespace, name), daemon=True
        )
        self._thread.start()

    def _watch(self, kube: Client, namespace: str, name: str) -> None:
        with contextlib.suppress(Exception):  # the watch ends with the test, however it ends
            for _, obj in kube.watch(
                Deployment, namespace=namespace, fields={"metadata.name": name}
            ):
                if self._stop.is_set():
                    return
                meta = obj.spec.template.metadata if obj.spec else None
                value = ((meta.annotations if meta else None) or {}).get(RESTARTED_AT)
                if not self.values or self.values[-1] != value:
                    self.values.append(value)

    def stop(self) -> None:
        self._stop.set()
