"""Every `examples/NN-topic/` folder works: applied in a fresh namespace against the real
control plane, the real token service and `apitoken-operator run`, each of its ApiTokens becomes
Ready with a managed Secret, no token value leaks, and deleting the ApiTokens deletes their
tokens at the service (what the examples' READMEs promise for the default deletionPolicy)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken
from localkube.examples import apply_example, example_folders
from localkube.tokenservice import WorkspaceCredential
from support.operator import (
    RunningOperator,
    ServiceAdmin,
    condition,
    eventually,
    leaks,
    release_leftovers,
    secret_data,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.e2e

MANAGED_BY = "app.kubernetes.io/managed-by"


def _gone(kube: Client, namespace: str, name: str) -> bool:
    try:
        kube.get(ApiToken, name, namespace=namespace)
    except ApiError as e:
        return e.status.code == 404
    return False


@pytest.mark.parametrize("folder", example_folders(), ids=lambda p: p.name)
def test_example_becomes_ready_and_cleans_up(
    folder: Path,
    kube: Client,
    namespace: str,
    e2e_service: RunningTokenService,
    service_admin: ServiceAdmin,
    running_operator: RunningOperator,
) -> None:
    def credential(named: str) -> WorkspaceCredential:
        # Whatever workspace the example names, it runs in the test service's workspace, with
        # a fresh admin credential (bootstrap values are used once).
        value = service_admin.new_bootstrap_value(f"operator-{namespace}-{named}")
        return WorkspaceCredential(e2e_service.workspace, value)

    try:
        applied = apply_example(kube, folder, namespace, e2e_service.base_url, credential)
        names = [d["metadata"]["name"] for d in applied if d["kind"] == "ApiToken"]
        assert names

        uids: dict[str, str] = {}
        for name in names:

            def ready(name: str = name) -> Any:
                obj = kube.get(ApiToken, name, namespace=namespace)
                return obj if condition(obj, "Ready") == "True" else None

            obj = eventually(f"ApiToken {name} to be Ready", ready, timeout=60)
            uids[name] = obj.metadata.uid
            secret_name = status_of(obj)["secretName"]
            secret = kube.get(Secret, secret_name, namespace=namespace)
            assert secret.metadata is not None and secret.metadata.labels is not None
            assert secret.metadata.labels[MANAGED_BY] == "apitoken-operator"
            data = secret_data(kube, namespace, secret_name)  # also feeds the leak scan
            assert data is not None
            assert {"access_token", "refresh_token", "token_type", "expires_at"} <= set(data)
            tokens = service_admin.tokens_of(uids[name])
            assert [t["status"] for t in tokens] == ["active"], tokens

        for name in names:
            kube.delete(ApiToken, name, namespace=namespace)
        for name in names:
            gone = functools.partial(_gone, kube, namespace, name)
            eventually(f"ApiToken {name} to be deleted", gone, timeout=60)
            assert service_admin.tokens_of(uids[name]) == []

        found = leaks(kube, namespace, running_operator, e2e_service)
        assert not found, found
    finally:
        release_leftovers(kube, namespace)
