"""The local control plane as pytest fixtures: one cluster per run, one namespace per test.

If the control plane cannot start, every test that needs it errors (never skips), so `make test`
fails loudly. USE_EXISTING_CLUSTER=true runs the same tests against the cluster KUBECONFIG names.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Iterator

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from localkube import Cluster, start_control_plane


def _log(msg: str) -> None:
    sys.stderr.write(f"[localkube] {msg}\n")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # The node (containerd, kubelet, images) starts once per session, and only when a collected
    # test needs it (marker `node`): the other tiers run on the control plane alone.
    node = any(item.get_closest_marker("node") for item in request.session.items)
    started = time.monotonic()
    with start_control_plane(log=_log, node=node) as c:
        _log(f"ready in {time.monotonic() - started:.1f}s at {c.server}")
        yield c


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> Client:
    """A synchronous admin client (lightkube) for arranging and checking cluster state."""
    return cluster.client()


def namespace_name(test_name: str) -> str:
    """A DNS-1123 label naming the test, unique per run."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(f"{test_name}{time.time_ns()}".encode()).hexdigest()[:6]
    return f"t-{slug}-{digest}"


@pytest.fixture
def namespace(kube: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = namespace_name(request.node.name)
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"apitoken.dev/test": "true"})))
    yield name
    try:
        kube.delete(Namespace, name)
    except ApiError as e:
        if e.status.code != 404:
            raise
