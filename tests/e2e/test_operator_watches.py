"""The operator watches only the Secrets it manages (invariant 6, issue item 8): every list or
watch of Secrets carries the managed-by label selector, other Secrets are read by name only when
a resource names them, and Secrets of other software are never read, written or annotated."""

from __future__ import annotations

import re

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import FIELD_MANAGER, PROTECTION_FIELD_MANAGER
from support.operator import (
    OperatorTest,
    RunningOperator,
    api_token,
    next_refresh,
    ready_token,
    secret_data,
)

pytestmark = pytest.mark.e2e

# The operator runs with --verbose in the tests: one log line per Kubernetes API request.
REQUEST = re.compile(r'HTTP Request: (?P<verb>[A-Z]+) (?P<url>\S+) \\"HTTP/1\.1')
SELECTOR = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dapitoken-operator"
OURS = {FIELD_MANAGER, PROTECTION_FIELD_MANAGER}
UNRELATED = [f"unrelated-{i}" for i in range(3)]


def secret_requests(operator: RunningOperator) -> list[tuple[str, str]]:
    found = (REQUEST.search(line) for line in operator.logs().splitlines())
    return [(m["verb"], m["url"]) for m in found if m and "/secrets" in m["url"]]


def test_only_managed_secrets_are_watched_and_others_are_never_touched(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    for name in UNRELATED:
        kube.create(Secret(metadata=ObjectMeta(name=name, namespace=ns), stringData={"k": "v"}))
    api_token(kube, ns)
    ready_token(kube, ns)
    first = secret_data(kube, ns, "tok")
    assert first is not None
    for name in UNRELATED:  # changes to other Secrets must not wake the operator
        kube.patch(Secret, name, {"stringData": {"k": "w"}}, namespace=ns)
    next_refresh(kube, ns, after=first)

    requests = secret_requests(op.operator)
    collections = [url for _, url in requests if re.search(r"/secrets(\?|$)", url)]
    assert collections, "the operator should watch its Secrets"
    assert all(SELECTOR in url for url in collections), collections
    touched = [url for _, url in requests if any(f"/secrets/{name}" in url for name in UNRELATED)]
    assert touched == []
    for name in UNRELATED:
        meta = kube.get(Secret, name, namespace=ns).metadata
        assert meta is not None
        assert not meta.annotations and not meta.finalizers and not meta.ownerReferences
        managers = {f.manager for f in meta.managedFields or []}
        assert managers and not managers & OURS, managers
    # The managed Secret, by contrast, is the operator's.
    managed = kube.get(Secret, "tok", namespace=ns).metadata
    assert managed is not None
    assert {f.manager for f in managed.managedFields or []} & OURS
