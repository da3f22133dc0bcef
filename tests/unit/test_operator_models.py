"""Defaults computed in code (the CRDs have none) and the models' validation."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    ClusterTokenWorkspaceSpec,
    DeletionPolicy,
    Provider,
    RetiringToken,
    TokenWorkspaceSpec,
    WorkspaceKind,
    status_patch,
)

pytestmark = pytest.mark.unit


def test_defaults_of_a_minimal_api_token() -> None:
    spec = ApiTokenSpec.model_validate({"workspaceRef": {"name": "main"}})
    resolved = spec.resolve("apps", "billing")
    assert resolved.token_name == "apps/billing"
    assert resolved.secret_name == "billing"
    assert resolved.lifetime_days == 90
    assert resolved.renew_before == timedelta(days=30)
    assert resolved.refresh_percent == 75
    assert resolved.deletion_policy is DeletionPolicy.DELETE
    assert resolved.workspace_kind is WorkspaceKind.TOKEN_WORKSPACE
    assert (resolved.secret_labels, resolved.secret_annotations) == ({}, {})
    assert resolved.disabled is False and resolved.import_ref is None


def test_explicit_values_win() -> None:
    spec = ApiTokenSpec.model_validate(
        {
            "workspaceRef": {"name": "shared", "kind": "ClusterTokenWorkspace"},
            "tokenName": "ci",
            "lifetimeDays": 30,
            "secretName": "ci-token",
            "secretTemplate": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
            "refreshPercent": 50,
            "renewBefore": "72h",
            "deletionPolicy": "Orphan",
            "refreshTokenSecretRef": {"name": "hand", "key": "rt"},
        }
    )
    resolved = spec.resolve("apps", "billing")
    assert resolved.workspace_kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE
    assert (resolved.token_name, resolved.secret_name, resolved.lifetime_days) == (
        "ci",
        "ci-token",
        30,
    )
    assert resolved.renew_before == timedelta(hours=72)
    assert resolved.secret_labels == {"a": "b"}
    assert resolved.deletion_policy is DeletionPolicy.ORPHAN
    assert resolved.import_ref is not None and resolved.import_ref.resolved_key == "rt"


def test_default_renew_before_is_a_third_of_the_lifetime() -> None:
    spec = ApiTokenSpec.model_validate({"workspaceRef": {"name": "m"}, "lifetimeDays": 7})
    assert spec.resolve("a", "b").renew_before == timedelta(days=7) / 3


@pytest.mark.parametrize(
    "spec",
    [
        {"workspaceRef": {"name": "m"}, "lifetimeDays": 0},
        {"workspaceRef": {"name": "m"}, "lifetimeDays": 366},
        {"workspaceRef": {"name": "m"}, "renewBefore": "30d"},
        {"workspaceRef": {"name": "m"}, "deletionPolicy": "Keep"},
        {"workspaceRef": {"name": "m", "kind": "Issuer"}},
        {},
    ],
    ids=["lifetime-0", "lifetime-366", "duration-days", "bad-policy", "bad-kind", "no-workspace"],
)
def test_invalid_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiTokenSpec.model_validate(spec)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    spec = ApiTokenSpec.model_validate({"workspaceRef": {"name": "m"}, "newField": 1})
    assert spec.workspace_ref.name == "m"


@pytest.mark.parametrize(
    ("spec", "provider", "endpoint", "client_id"),
    [
        (
            {"url": "http://svc/", "workspace": "w"},
            Provider.APITOKEN,
            "http://svc/oauth2/token",
            None,
        ),
        (
            {
                "provider": "oauth2",
                "oauth2": {"tokenEndpoint": "https://idp/token", "clientId": "c"},
            },
            Provider.OAUTH2,
            "https://idp/token",
            "c",
        ),
        ({}, Provider.APITOKEN, None, None),
    ],
    ids=["apitoken-default", "oauth2", "incomplete"],
)
def test_workspace_token_endpoint(
    spec: dict[str, object], provider: Provider, endpoint: str | None, client_id: str | None
) -> None:
    ws = TokenWorkspaceSpec.model_validate(spec)
    assert (ws.resolved_provider, ws.token_endpoint, ws.client_id) == (
        provider,
        endpoint,
        client_id,
    )


def test_cluster_workspace_reads_allowed_namespaces_and_secret_namespace() -> None:
    ws = ClusterTokenWorkspaceSpec.model_validate(
        {
            "url": "http://svc",
            "workspace": "w",
            "credentialsSecretRef": {"name": "cred", "namespace": "ops"},
            "allowedNamespaces": {"names": ["a"], "selector": {"matchLabels": {"t": "x"}}},
        }
    )
    assert ws.credentials_secret_ref is not None and ws.credentials_secret_ref.namespace == "ops"
    assert ws.allowed_namespaces is not None and ws.allowed_namespaces.names == ("a",)


def test_status_round_trips_through_the_api_form() -> None:
    raw = {
        "observedGeneration": 2,
        "tokenId": "tok-1",
        "refreshTokenExpiresAt": "2027-02-26T13:00:00Z",
        "failedRefreshAttempts": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "TokenReady",
                "message": "ok",
                "lastTransitionTime": "2026-11-28T12:00:00Z",
                "observedGeneration": 2,
            }
        ],
    }
    status = ApiTokenStatus.model_validate(raw)
    assert status.to_json() == raw
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == "TokenReady"


def test_status_patch_sets_changes_and_clears_what_went_away() -> None:
    old = ApiTokenStatus(
        token_id="tok-1",
        failed_refresh_attempts=2,
        last_failure_reason="ServiceError",
        retiring_tokens=(RetiringToken(id="tok-0"),),
    )
    new = old.model_copy(
        update={
            "token_id": "tok-2",
            "failed_refresh_attempts": 0,
            "last_failure_reason": None,
            "retiring_tokens": (),
        }
    )
    assert status_patch(old, new) == {
        "tokenId": "tok-2",
        "failedRefreshAttempts": None,
        "lastFailureReason": None,
        "retiringTokens": None,
    }
    assert status_patch(new, new) == {}
