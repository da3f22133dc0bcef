"""Every `examples/NN-topic/` folder works: applied in a fresh namespace against the real
control plane, the real token service and `apitoken-operator run`, each of its ApiTokens becomes
Ready with a managed Secret, no token value leaks, and deleting the ApiTokens deletes their
tokens at the service (what the examples' READMEs promise for the default deletionPolicy).

Refresh-only examples (provider oauth2) run against a token server built with Authlib
(`support.foreign_idp`) configured with the example's client: their import Secrets are made with
the README's own `kubectl create secret generic --from-file=KEY=/dev/stdin`, and deleting the
ApiTokens revokes the refresh token where the example names a revocation endpoint."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.generic_resource import load_in_cluster_generic_resources
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from localkube.examples import (
    apply_example,
    example_folders,
    in_apply_order,
    is_refresh_only,
    is_token_workspace,
    load_manifests,
)
from localkube.tokenservice import WorkspaceCredential
from support.foreign_idp import ForeignIdP, IdPClient
from support.operator import (
    RunningOperator,
    ServiceAdmin,
    condition,
    events_of,
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


SERVICE_EXAMPLES = [f for f in example_folders() if not is_refresh_only(f)]
REFRESH_ONLY_EXAMPLES = [f for f in example_folders() if is_refresh_only(f)]
KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.mark.parametrize("folder", SERVICE_EXAMPLES, ids=lambda p: p.name)
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


def _kubectl_secret_from_stdin(
    cluster: Cluster, namespace: str, name: str, key: str, value: str
) -> None:
    """The README's way: the value on standard input, never on a command line."""
    subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            name,
            f"--from-file={key}=/dev/stdin",
        ],
        input=value.encode(),
        check=True,
        capture_output=True,
        timeout=30,
    )


def _idp_client(oauth2: dict[str, Any]) -> IdPClient:
    method = oauth2.get("clientAuthMethod") or (
        "client_secret_basic" if oauth2.get("clientSecretRef") else "none"
    )
    secret = "example-client-secret-" + "z" * 20 if method != "none" else None
    return IdPClient(
        str(oauth2.get("clientId") or "example-client"),
        client_secret=secret,
        auth_method=method,
        scope=str(oauth2.get("scope") or ""),
    )


@pytest.mark.parametrize("folder", REFRESH_ONLY_EXAMPLES, ids=lambda p: p.name)
def test_refresh_only_example_against_a_foreign_token_server(
    folder: Path,
    kube: Client,
    cluster: Cluster,
    namespace: str,
    running_operator: RunningOperator,
) -> None:
    running_operator.wait_ready()
    docs = in_apply_order(load_manifests(folder))
    workspaces = {d["metadata"]["name"]: d for d in docs if is_token_workspace(d)}
    clients = {name: _idp_client(d["spec"]["oauth2"]) for name, d in workspaces.items()}
    with ForeignIdP(clients=tuple(clients.values()), access_token_ttl=20) as idp:
        load_in_cluster_generic_resources(kube)
        names: list[str] = []
        revoking: set[str] = set()
        try:
            for doc in docs:
                doc = copy.deepcopy(doc)
                doc["metadata"]["namespace"] = namespace
                if is_token_workspace(doc):
                    oauth2 = doc["spec"]["oauth2"]
                    # The example's provider becomes the foreign server, setting by setting.
                    for field, url in (
                        ("tokenEndpoint", idp.token_endpoint),
                        ("revocationEndpoint", idp.revocation_endpoint),
                        ("issuer", idp.issuer),
                    ):
                        if field in oauth2:
                            oauth2[field] = url
                    if oauth2.get("issuer") or oauth2.get("revocationEndpoint"):
                        revoking.add(doc["metadata"]["name"])
                    client = clients[doc["metadata"]["name"]]
                    ref = oauth2.get("clientSecretRef")
                    if ref is not None:
                        assert client.client_secret is not None
                        key = ref.get("key", "client_secret")
                        _kubectl_secret_from_stdin(
                            cluster, namespace, ref["name"], key, client.client_secret
                        )
                if doc["kind"] == "ApiToken":
                    ref = doc["spec"]["refreshTokenSecretRef"]
                    client = clients[doc["spec"]["workspaceRef"]["name"]]
                    value = idp.issue(client.client_id)
                    key = ref.get("key", "refresh_token")
                    _kubectl_secret_from_stdin(cluster, namespace, ref["name"], key, value)
                    names.append(doc["metadata"]["name"])
                kube.apply(from_dict(doc), field_manager="examples", force=True)
            assert names
            held: dict[str, str] = {}
            for name in names:

                def ready(name: str = name) -> Any:
                    obj = kube.get(ApiToken, name, namespace=namespace)
                    return obj if condition(obj, "Ready") == "True" else None

                obj = eventually(f"ApiToken {name} to be Ready", ready, timeout=60)
                data = secret_data(kube, namespace, status_of(obj)["secretName"])
                assert data is not None
                assert {"access_token", "refresh_token", "token_type", "expires_at"} <= set(data)
                assert idp.access_token_valid(data["access_token"])
                held[name] = data["refresh_token"]
            seen = idp.token_requests()
            for s in seen:
                assert s.status == 200 and s.client_id in {c.client_id for c in clients.values()}
            for name in names:
                kube.delete(ApiToken, name, namespace=namespace)
                eventually(
                    f"ApiToken {name} to be deleted",
                    functools.partial(_gone, kube, namespace, name),
                    timeout=60,
                )
            for doc in docs:
                if doc["kind"] == "ApiToken":
                    name = doc["metadata"]["name"]
                    revoked = idp.revoked(held[name])
                    assert revoked is (doc["spec"]["workspaceRef"]["name"] in revoking), name
            values = [
                *idp.values(),
                *(c.client_secret for c in clients.values() if c.client_secret),
            ]
            log = running_operator.logs()
            events = str([e.to_dict() for e in events_of(kube, namespace)])
            assert not [v[:8] for v in values if v in log or v in events]
        finally:
            release_leftovers(kube, namespace)
