"""The local control plane gives the operator what it needs: proven against the real apiserver."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import PatchType

from localkube import Cluster
from localkube.controlplane import apply_crds
from support.polling import eventually

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
Widget = create_namespaced_resource("smoke.apitoken.dev", "v1", "Widget", "widgets")
T = TypeVar("T")
# Custom resources take JSON merge patches; strategic merge is for built-in kinds only.
MERGE = PatchType.MERGE


@pytest.fixture(scope="module", autouse=True)
def widget_crd(kube: Client) -> None:
    apply_crds(kube, [HERE / "manifests" / "widgets.smoke.apitoken.dev.yaml"])


def gone(get: Callable[[], Any]) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            get()
        except ApiError as e:
            return e.status.code == 404
        return False

    return probe


def generation(obj: Any) -> int:
    return int(obj.metadata.generation)


def new_widget(kube: Client, namespace: str, size: int = 1) -> Any:
    return kube.create(
        Widget(metadata=ObjectMeta(name="w", namespace=namespace), spec={"size": size})
    )


def test_cel_transition_rule_rejects_an_invalid_update_with_its_message(
    kube: Client, namespace: str
) -> None:
    new_widget(kube, namespace, size=3)
    with pytest.raises(ApiError) as refused:
        kube.patch(Widget, "w", {"spec": {"size": 2}}, namespace=namespace, patch_type=MERGE)
    assert refused.value.status.code == 422
    assert "size may only grow" in (refused.value.status.message or "")
    # The stored object is untouched, and a valid update still goes through.
    assert kube.get(Widget, "w", namespace=namespace).spec["size"] == 3
    kube.patch(Widget, "w", {"spec": {"size": 4}}, namespace=namespace, patch_type=MERGE)
    assert kube.get(Widget, "w", namespace=namespace).spec["size"] == 4


def test_status_subresource_is_separate_from_spec(kube: Client, namespace: str) -> None:
    created = new_widget(kube, namespace)
    # Status written through the main resource is dropped...
    kube.patch(Widget, "w", {"status": {"seen": "main"}}, namespace=namespace, patch_type=MERGE)
    assert kube.get(Widget, "w", namespace=namespace).get("status") in (None, {})
    # ...and through /status it is stored without bumping the generation or touching spec.
    kube.patch(
        Widget.Status, "w", {"status": {"seen": "sub"}}, namespace=namespace, patch_type=MERGE
    )
    after = kube.get(Widget, "w", namespace=namespace)
    assert after["status"] == {"seen": "sub"}
    assert generation(after) == generation(created)
    assert after.spec == {"size": 1}
    # A spec change bumps the generation; status stays as it was.
    kube.patch(Widget, "w", {"spec": {"size": 2}}, namespace=namespace, patch_type=MERGE)
    bumped = kube.get(Widget, "w", namespace=namespace)
    assert generation(bumped) == generation(created) + 1
    assert bumped["status"] == {"seen": "sub"}


def test_secret_owned_by_a_custom_resource_is_garbage_collected(
    kube: Client, namespace: str
) -> None:
    owner = new_widget(kube, namespace)
    kube.create(
        Secret(
            metadata=ObjectMeta(
                name="owned",
                namespace=namespace,
                ownerReferences=[
                    OwnerReference(
                        apiVersion="smoke.apitoken.dev/v1",
                        kind="Widget",
                        name="w",
                        uid=owner.metadata.uid,
                        blockOwnerDeletion=True,
                    )
                ],
            ),
            stringData={"k": "v"},
        )
    )
    kube.delete(Widget, "w", namespace=namespace)
    # The collector learns new kinds from discovery, so allow for its ~30 s resync.
    eventually(
        "the owned Secret to be collected",
        gone(lambda: kube.get(Secret, "owned", namespace=namespace)),
        timeout=120,
    )


def test_namespace_deletion_completes(kube: Client, namespace: str) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="c", namespace=namespace), data={"k": "v"}))
    new_widget(kube, namespace)
    kube.delete(Namespace, namespace)
    eventually(
        "the namespace to be deleted", gone(lambda: kube.get(Namespace, namespace)), timeout=120
    )


@pytest.fixture
def service_account_token(kube: Client, namespace: str) -> str:
    """A ServiceAccount allowed to read ConfigMaps in its namespace, and nothing else."""
    kube.create(ServiceAccount(metadata=ObjectMeta(name="reader", namespace=namespace)))
    kube.create(
        Role(
            metadata=ObjectMeta(name="read-configmaps", namespace=namespace),
            rules=[PolicyRule(apiGroups=[""], resources=["configmaps"], verbs=["get", "list"])],
        )
    )
    kube.create(
        RoleBinding(
            metadata=ObjectMeta(name="reader", namespace=namespace),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"
            ),
            subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
    )
    issued = kube.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=600),
        ),
        "reader",
        namespace=namespace,
    )
    assert issued.status is not None
    return str(issued.status.token)


@pytest.fixture
def as_service_account(cluster: Cluster, service_account_token: str) -> Iterator[httpx.Client]:
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = kubeconfig["clusters"][0]["cluster"].get("certificate-authority-data")
    ctx = ssl.create_default_context()
    if ca:  # the local control plane's own CA; an existing cluster may use a public one
        ctx.load_verify_locations(cadata=base64.b64decode(ca).decode())
    headers = {"Authorization": f"Bearer {service_account_token}"}
    with httpx.Client(base_url=cluster.server, verify=ctx, headers=headers) as client:
        yield client


def test_service_account_token_authenticates_and_rbac_denies_the_rest(
    kube: Client, namespace: str, as_service_account: httpx.Client
) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="c", namespace=namespace), data={"k": "v"}))
    who = as_service_account.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert who.status_code == 201
    assert who.json()["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:reader"
    )
    allowed = as_service_account.get(f"/api/v1/namespaces/{namespace}/configmaps/c")
    assert allowed.status_code == 200
    assert allowed.json()["data"] == {"k": "v"}
    denied = as_service_account.get(f"/api/v1/namespaces/{namespace}/secrets")
    assert denied.status_code == 403
    elsewhere = as_service_account.get("/api/v1/namespaces/default/configmaps")
    assert elsewhere.status_code == 403
    forged = as_service_account.get(
        f"/api/v1/namespaces/{namespace}/configmaps/c",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert forged.status_code == 401


def test_a_minimal_kopf_operator_reacts_to_a_custom_resource(
    kube: Client, namespace: str, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    operator = HERE / "operators" / "widget_operator.py"
    args = ["run", "--standalone", "--namespace", namespace, "--verbose", str(operator)]
    with KopfRunner(args, timeout=60) as runner:
        new_widget(kube, namespace, size=5)

        def seen() -> str | None:
            status = kube.get(Widget, "w", namespace=namespace).get("status") or {}
            value = status.get("seen")
            return str(value) if value else None

        assert eventually("the operator to write status", seen, timeout=60) == "size=5"
        kube.delete(Widget, "w", namespace=namespace)
        eventually(
            "the finalizer to be released",
            gone(lambda: kube.get(Widget, "w", namespace=namespace)),
            timeout=60,
        )
    assert runner.exit_code == 0, runner.output
    assert "Handler 'created' succeeded" in runner.output
    assert "Handler 'deleted' succeeded" in runner.output
