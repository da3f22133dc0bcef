"""deploy/rbac.yaml suffices: the operator authenticated as that ServiceAccount (a TokenRequest
token in a kubeconfig) generates, refreshes, re-issues and deletes, with no request refused."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from support.operator import (
    OPERATOR_NAMESPACE,
    OperatorTest,
    RunningOperator,
    api_token,
    condition,
    events_of,
    eventually,
    merge_patch,
    next_refresh,
    ready_token,
    reason,
    secret_data,
    start_operator,
    status_of,
)
from support.workloads import create_workload, restarted_at

pytestmark = pytest.mark.e2e

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
ROLLOUT_RBAC = RBAC.with_name("rbac-rollout-restart.yaml")
SA_NAMESPACE = "apitoken-operator-rbac-e2e"
SUFFIX = "-rbac-e2e"


def rbac_objects(path: Path = RBAC) -> list[Any]:
    """deploy/rbac.yaml (or another file of deploy/) with the ServiceAccount in a namespace of
    the test and cluster-wide names of its own."""
    docs = [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "ServiceAccount":
            meta["namespace"] = SA_NAMESPACE
        else:
            meta["name"] += SUFFIX
        if doc["kind"] in ("Role", "RoleBinding"):
            # The Lease lives where the operator keeps its own Secrets.
            meta["namespace"] = OPERATOR_NAMESPACE
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            doc["roleRef"]["name"] += SUFFIX
            for subject in doc["subjects"]:
                subject["namespace"] = SA_NAMESPACE
    return [codecs.from_dict(d) for d in docs]


def service_account_kubeconfig(kube: Client, cluster: Cluster, path: Path) -> Path:
    issued = kube.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=3600)
        ),
        "apitoken-operator",
        namespace=SA_NAMESPACE,
    )
    assert issued.status is not None
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": issued.status.token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def running_operator(
    kube: Client,
    cluster: Cluster,
    operator_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """This module's operator runs as the ServiceAccount of deploy/rbac.yaml."""
    kube.apply(Namespace(metadata=ObjectMeta(name=SA_NAMESPACE)), force=True)
    for obj in rbac_objects():
        kube.apply(obj, force=True)
    directory = tmp_path_factory.mktemp("operator-rbac")
    kubeconfig = service_account_kubeconfig(kube, cluster, directory / "kubeconfig")
    # The Lease name the Role grants (resourceNames), so election runs on exactly these rules.
    with start_operator(directory, kubeconfig, wait=False, lease="apitoken-operator") as running:
        yield running


def test_the_operator_works_with_the_documented_rbac_only(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    created = api_token(kube, ns, secretTemplate={"labels": {"team": "a"}})
    first = status_of(ready_token(kube, ns))
    data = secret_data(kube, ns, "tok")
    assert data is not None
    next_refresh(kube, ns, after=data)
    merge_patch(kube, ns, {"spec": {"lifetimeDays": 3}})

    def reissued() -> bool:
        status = status_of(kube.get(ApiToken, "tok", namespace=ns))
        return status.get("tokenId") not in (None, first["tokenId"])

    eventually("a re-issue", reissued)
    kube.delete(ApiToken, "tok", namespace=ns)

    def released() -> bool:
        return not list(kube.list(ApiToken, namespace=ns))

    eventually("the finalizer to be released", released)
    assert op.admin.tokens_of(created.metadata.uid) == []
    logs = op.operator.logs()
    assert "Forbidden" not in logs and " 403" not in logs, [
        line[:300] for line in logs.splitlines() if "Forbidden" in line or " 403" in line
    ][:5]
    assert "Generated: token" in logs
    # The Namespace and Secret watches ran on these rules (no fallback to a GET per run).
    assert "watch failed" not in logs
    # And the rules are narrow: the ServiceAccount may write Secrets but never delete them.
    assert may(kube, "patch", "secrets") and not may(kube, "delete", "secrets")
    assert not may(kube, "delete", "apitokens", "apitoken.dev")


def may(kube: Client, verb: str, resource: str, group: str = "") -> bool:
    review = kube.create(
        SubjectAccessReview(
            spec=SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{SA_NAMESPACE}:apitoken-operator",
                resourceAttributes=ResourceAttributes(
                    verb=verb, resource=resource, group=group, namespace="default"
                ),
            )
        )
    )
    return bool(review.status and review.status.allowed)


def test_rollout_restart_without_its_rule_is_reported_then_done_once_granted(
    kube: Client, op: OperatorTest
) -> None:
    """deploy/rbac.yaml has no rule for workloads: a restart on re-issue is refused, said in
    Reconciling and a Warning event naming the missing permission, while the token stays
    Ready; once deploy/rbac-rollout-restart.yaml is applied the retry restarts it."""
    ns = op.namespace
    create_workload(kube, ns, "Deployment", "web")
    api_token(kube, ns, rolloutRestartTargets=[{"kind": "Deployment", "name": "web"}])
    first = status_of(ready_token(kube, ns))["tokenId"]
    merge_patch(kube, ns, {"metadata": {"annotations": {"apitoken.dev/reissue": "1"}}})

    def refused() -> Any:
        obj = kube.get(ApiToken, "tok", namespace=ns)
        failure = (status_of(obj).get("rolloutRestart") or {}).get("lastFailureMessage")
        return obj if failure and reason(obj, "Reconciling") == "RolloutRestartFailed" else None

    obj = eventually("the refused restart in status", refused)
    status = status_of(obj)
    assert status["tokenId"] != first and condition(obj, "Ready") == "True"
    message = status["rolloutRestart"]["lastFailureMessage"]
    assert "403 Forbidden" in message and "patch on deployments (apps)" in message, message
    assert "rbac.rolloutRestart" in message
    warnings = [e for e in events_of(kube, ns) if e.reason == "RolloutRestartFailed"]
    assert warnings and warnings[0].type == "Warning"
    assert restarted_at(kube, ns, "Deployment", "web") is None

    grant = rbac_objects(ROLLOUT_RBAC)
    for granted in grant:
        kube.apply(granted, force=True)
    try:

        def restarted() -> bool:
            obj = kube.get(ApiToken, "tok", namespace=ns)
            rollout = status_of(obj).get("rolloutRestart") or {}
            return bool(rollout.get("tokenId") == status["tokenId"])

        eventually("the restart once permitted", restarted, timeout=30)
        assert (
            restarted_at(kube, ns, "Deployment", "web") == status["rolloutRestart"]["restartedAt"]
        )
    finally:
        for granted in reversed(grant):
            kube.delete(type(granted), granted.metadata.name)
