"""`apitoken-operator run --namespace NS`: the operator serves that namespace only (its Secret
watch included) and leaves ApiTokens elsewhere alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from support.controlplane import namespace_name
from support.operator import (
    RunningOperator,
    ServiceAdmin,
    api_token,
    condition,
    create_workspace,
    eventually,
    release_leftovers,
    secret_data,
    start_operator,
    status_of,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(kube: Client) -> Iterator[str]:
    name = namespace_name("served")
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(ApiError):
        kube.delete(Namespace, name)


@pytest.fixture(scope="module")
def running_operator(
    cluster: Cluster,
    served: str,
    operator_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    directory = tmp_path_factory.mktemp("operator-namespaced")
    with start_operator(directory, cluster.kubeconfig, namespaces=(served,)) as running:
        yield running


def test_only_the_given_namespace_is_served(
    kube: Client,
    served: str,
    namespace: str,
    service_admin: ServiceAdmin,
    running_operator: RunningOperator,
) -> None:
    for ns in (served, namespace):
        # Not waited for: the operator serves only one of the two namespaces.
        create_workspace(
            kube,
            ns,
            url=service_admin.service.base_url,
            service_workspace=service_admin.service.workspace,
            bootstrap_value=service_admin.new_bootstrap_value(f"op-{ns}"),
            wait_ready=False,
        )
        api_token(kube, ns)
    try:

        def ready() -> Any:
            obj = kube.get(ApiToken, "tok", namespace=served)
            return obj if condition(obj, "Ready") == "True" else None

        tid = status_of(eventually("the served ApiToken to be Ready", ready))["tokenId"]
        # Its Secret is watched: deleting it gets a new one at once.
        kube.delete(Secret, "tok", namespace=served)

        def recreated() -> bool:
            obj = kube.get(ApiToken, "tok", namespace=served)
            return status_of(obj).get("tokenId") not in (None, tid) and bool(
                secret_data(kube, served, "tok")
            )

        eventually("the deleted Secret to be recreated", recreated, timeout=15)
        # Elsewhere nothing happens: no finalizer, no status, no Secret.
        other = kube.get(ApiToken, "tok", namespace=namespace)
        assert not status_of(other)
        assert not (other.metadata.finalizers if other.metadata else None)
        assert secret_data(kube, namespace, "tok") is None
    finally:
        release_leftovers(kube, served)
