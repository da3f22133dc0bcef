"""Bad ApiToken input is refused by the real kube-apiserver with a message that names the field,
and a refused update leaves the stored object as it was (invariant 7). No operator runs here:
admission is the CRDs' schema and CEL rules alone, so this holds even while the operator is down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from apitoken_operator.kube.resources import ApiToken, TokenWorkspace
from localkube import Cluster

pytestmark = pytest.mark.e2e

KUBECTL = Path(sys.executable).parent / "kubectl"
VALID: dict[str, Any] = {"workspaceRef": {"name": "main"}, "lifetimeDays": 30}


def refusal(kube: Client, namespace: str, spec: dict[str, Any]) -> str:
    """Create an ApiToken with `spec`; return the apiserver's refusal message."""
    meta = ObjectMeta(name="bad", namespace=namespace)
    with pytest.raises(ApiError) as refused:
        kube.create(ApiToken(metadata=meta, spec=spec))
    assert refused.value.status.code == 422, refused.value.status
    return refused.value.status.message or ""


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"lifetimeDays": 0}, "spec.lifetimeDays", "greater than or equal to 1"),
        ({"lifetimeDays": 366}, "spec.lifetimeDays", "less than or equal to 365"),
        ({"lifetimeDays": -5}, "spec.lifetimeDays", "greater than or equal to 1"),
        ({"lifetimeDays": "30"}, "spec.lifetimeDays", "must be of type integer"),
        ({"lifetimeDays": 1.5}, "spec.lifetimeDays", "must be of type integer"),
        ({"secretName": "Bad_Name"}, "spec.secretName", "should match"),
        ({"renewBefore": "ten days"}, "spec.renewBefore", "should match"),
        ({"renewBefore": "2400h"}, "spec.renewBefore", "shorter than the token's lifetime"),
        ({"deletionPolicy": "Keep"}, "spec.deletionPolicy", 'supported values: "Delete"'),
        ({"refreshPercent": 99}, "spec.refreshPercent", "less than or equal to 95"),
        (
            {"secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "me"}}},
            "spec.secretTemplate.labels",
            "cannot set app.kubernetes.io/managed-by",
        ),
        (
            {"secretTemplate": {"annotations": {"apitoken.dev/token-id": "x"}}},
            "spec.secretTemplate.annotations",
            "the operator owns those annotations",
        ),
        (
            {"workspaceRef": {"name": "main", "kind": "Issuer"}},
            "spec.workspaceRef.kind",
            "Unsupported",
        ),
        (
            {"rolloutRestartTargets": [{"kind": "CronJob", "name": "nightly"}]},
            "spec.rolloutRestartTargets[0].kind",
            'supported values: "Deployment", "StatefulSet", "DaemonSet"',
        ),
        (
            {"rolloutRestartTargets": [{"kind": "Deployment", "name": "Web_1"}]},
            "spec.rolloutRestartTargets[0].name",
            "should match",
        ),
        (
            {"rolloutRestartTargets": [{"kind": "Deployment"}]},
            "spec.rolloutRestartTargets[0].name",
            "Required value",
        ),
        (
            {
                "rolloutRestartTargets": [
                    {"kind": "Deployment", "name": "web"},
                    {"kind": "Deployment", "name": "web"},
                ]
            },
            "spec.rolloutRestartTargets[1]",
            "Duplicate value",
        ),
    ],
)
def test_bad_spec_is_refused_with_the_field_named(
    kube: Client, namespace: str, change: dict[str, Any], field: str, words: str
) -> None:
    message = refusal(kube, namespace, {**VALID, **change})
    assert field in message and words in message, message


def test_missing_workspace_ref_is_refused(kube: Client, namespace: str) -> None:
    message = refusal(kube, namespace, {"lifetimeDays": 30})
    assert "spec.workspaceRef: Required value" in message, message


@pytest.mark.parametrize(
    ("first", "then", "words"),
    [
        ({"disabled": True}, {"disabled": False}, "disabling a token is irreversible"),
        ({"disabled": True}, {"disabled": None}, "disabling a token is irreversible"),
        ({"secretName": "one"}, {"secretName": "two"}, "spec.secretName is immutable"),
        ({"secretName": "one"}, {"secretName": None}, "spec.secretName is immutable"),
        ({}, {"secretName": "other"}, "spec.secretName is immutable"),
    ],
)
def test_refused_update_keeps_what_is_stored(
    kube: Client, namespace: str, first: dict[str, Any], then: dict[str, Any], words: str
) -> None:
    meta = ObjectMeta(name="tok", namespace=namespace)
    created = kube.create(ApiToken(metadata=meta, spec={**VALID, **first}))
    with pytest.raises(ApiError) as refused:
        kube.patch(ApiToken, "tok", {"spec": then}, namespace=namespace, patch_type=PatchType.MERGE)
    assert refused.value.status.code == 422
    assert words in (refused.value.status.message or "")
    stored = kube.get(ApiToken, "tok", namespace=namespace)
    assert stored.spec == created.spec
    assert stored.metadata is not None and created.metadata is not None
    assert stored.metadata.resourceVersion == created.metadata.resourceVersion


def test_secret_name_may_be_added_with_the_value_it_already_has(
    kube: Client, namespace: str
) -> None:
    # GitOps tools that start spelling out the default must not be refused.
    kube.create(ApiToken(metadata=ObjectMeta(name="tok", namespace=namespace), spec=VALID))
    kube.patch(
        ApiToken,
        "tok",
        {"spec": {"secretName": "tok"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    assert kube.get(ApiToken, "tok", namespace=namespace).spec["secretName"] == "tok"


def test_kubectl_explain_reads_the_field_descriptions(cluster: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    done = subprocess.run(
        [str(KUBECTL), "explain", "apitokens.spec.lifetimeDays"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert "FIELD: lifetimeDays <integer>" in done.stdout, done.stdout
    assert "Lifetime of the token (its refresh token) in days, 1 to 365" in done.stdout


@pytest.mark.parametrize(
    ("oauth2", "words"),
    [
        ({"clientId": "c"}, "oauth2 needs tokenEndpoint, or an issuer"),
        (
            {
                "tokenEndpoint": "https://idp/t",
                "clientId": "c",
                "clientAuthMethod": "client_secret_post",
            },
            "need clientSecretRef",
        ),
        (
            {
                "tokenEndpoint": "https://idp/t",
                "clientId": "c",
                "clientAuthMethod": "none",
                "clientSecretRef": {"name": "s"},
            },
            "remove clientSecretRef",
        ),
        (
            {"tokenEndpoint": "https://idp/t", "clientSecretRef": {"name": "s"}},
            "needs the clientId it belongs to",
        ),
        (
            {"tokenEndpoint": "https://idp/t", "extraParams": {"client_secret": "x"}},
            "extraParams may not set",
        ),
        ({"tokenEndpoint": "https://idp/t", "clientAuthMethod": "private_key"}, "supported values"),
        (
            {"tokenEndpoint": "https://idp/t", "defaultAccessTokenLifetime": "1 hour"},
            "should match",
        ),
    ],
    ids=[
        "no-endpoint",
        "secret-method-without-secret",
        "none-with-secret",
        "secret-without-client-id",
        "reserved-extra-param",
        "unknown-method",
        "bad-lifetime",
    ],
)
def test_refresh_only_client_settings_are_checked_at_admission(
    kube: Client, namespace: str, oauth2: dict[str, Any], words: str
) -> None:
    meta = ObjectMeta(name="bad", namespace=namespace)
    with pytest.raises(ApiError) as refused:
        kube.create(TokenWorkspace(metadata=meta, spec={"provider": "oauth2", "oauth2": oauth2}))
    assert refused.value.status.code == 422, refused.value.status
    assert words in (refused.value.status.message or "")
