"""Raw Kubernetes objects to the core's views."""

import base64
import copy
from typing import Any

import pytest
from pydantic import ValidationError

from apitoken_operator.core.bodies import (
    api_token_view,
    invalid_spec,
    invalid_spec_status,
    observed_secret,
    secret_value,
    workspace_object,
    workspace_spec,
)
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import (
    ClusterTokenWorkspaceSpec,
    TokenWorkspaceStatus,
    WorkspaceKind,
)
from support.clock import T0

pytestmark = pytest.mark.unit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


BODY: dict[str, Any] = {
    "apiVersion": "apitoken.dev/v1alpha1",
    "kind": "ApiToken",
    "metadata": {
        "name": "billing",
        "namespace": "apps",
        "uid": "uid-1",
        "generation": 3,
        "labels": {"argocd.argoproj.io/instance": "apps"},
        "annotations": {
            "apitoken.dev/reissue": "now",
            "kopf.zalando.org/last-handled-configuration": "{}",
            "note": "x",
        },
    },
    "spec": {"workspaceRef": {"name": "main"}, "lifetimeDays": 30},
    "status": {"tokenId": "tok-1", "failedRefreshAttempts": 2},
}


def test_api_token_view_reads_spec_status_and_only_our_annotations() -> None:
    view = api_token_view(BODY)
    assert (view.namespace, view.name, view.uid, view.generation) == ("apps", "billing", "uid-1", 3)
    assert view.spec.lifetime_days == 30
    assert view.status.token_id == "tok-1" and view.status.failed_refresh_attempts == 2
    assert view.annotations == {"apitoken.dev/reissue": "now"}
    assert not view.deleting


def test_deleting_and_unreadable_status() -> None:
    body = copy.deepcopy(BODY)
    body["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    body["status"] = {"failedRefreshAttempts": "many"}
    view = api_token_view(body)
    assert view.deleting
    assert view.status.failed_refresh_attempts == 0  # rebuilt from the Secret instead


def test_invalid_spec_is_reported_not_raised_in_a_loop() -> None:
    body = {**BODY, "spec": {"workspaceRef": {"name": "main"}, "lifetimeDays": 0}}
    with pytest.raises(ValidationError) as caught:
        api_token_view(body)
    status = invalid_spec_status(body, caught.value, T0)
    stalled = status.condition(reasons.STALLED)
    assert stalled is not None and stalled.reason == reasons.INVALID_SPEC
    assert "lifetimeDays" in stalled.message or "lifetime_days" in stalled.message
    assert status.observed_generation == 3
    assert status.token_id == "tok-1"  # nothing stored is lost


def test_an_invalid_workspace_spec_is_reported_the_same_way() -> None:
    body = {
        "metadata": {"name": "main", "uid": "ws-uid", "generation": 4},
        "spec": {"url": "http://svc", "provider": "nope"},
        "status": {"credentialTokenId": "tok-9"},
    }
    with pytest.raises(ValidationError) as caught:
        workspace_object(WorkspaceKind.TOKEN_WORKSPACE, body)
    status = invalid_spec(body, caught.value, T0, TokenWorkspaceStatus)
    stalled = status.condition(reasons.STALLED)
    assert stalled is not None and stalled.reason == reasons.INVALID_SPEC
    assert "provider" in stalled.message and "nope" not in stalled.message
    assert status.observed_generation == 4
    assert status.credential_token_id == "tok-9"  # nothing stored is lost


def test_observed_secret_decodes_data_and_owners() -> None:
    secret = observed_secret(
        {
            "metadata": {
                "name": "billing",
                "labels": {"app.kubernetes.io/managed-by": "apitoken-operator"},
                "annotations": {"apitoken.dev/token-id": "tok-1"},
                "ownerReferences": [
                    {"apiVersion": "apitoken.dev/v1alpha1", "kind": "ApiToken", "uid": "uid-1"},
                    {"apiVersion": "apps/v1", "kind": "Deployment", "uid": "other"},
                ],
            },
            "data": {"refresh_token": b64("rt-value"), "broken": "%%%"},
        }
    )
    assert secret is not None and secret.managed and secret.token_id == "tok-1"
    assert secret.data == {"refresh_token": "rt-value", "broken": ""}
    assert secret.owner_uids == ("uid-1",)
    assert "rt-value" not in repr(secret)
    assert observed_secret(None) is None


def test_secret_value() -> None:
    body = {"metadata": {"name": "hand"}, "data": {"refresh_token": b64("v"), "empty": ""}}
    assert secret_value(body, "refresh_token") == "v"
    assert secret_value(body, "empty") is None
    assert secret_value(body, "missing") is None
    assert secret_value(None, "refresh_token") is None


def test_workspace_views() -> None:
    body = {
        "metadata": {"name": "shared", "uid": "ws-uid", "generation": 1},
        "spec": {
            "url": "http://svc",
            "workspace": "w",
            "credentialsSecretRef": {"name": "c", "namespace": "ops"},
            "allowedNamespaces": {"names": ["apps"]},
        },
    }
    kind = WorkspaceKind.CLUSTER_TOKEN_WORKSPACE
    assert isinstance(workspace_spec(kind, body), ClusterTokenWorkspaceSpec)
    obj = workspace_object(kind, body)
    assert (obj.namespace, obj.uid, obj.generation) == (None, "ws-uid", 1)
