"""The credential Secret's finalizer apitoken.dev/credential-in-use: added to a live Secret of a
live workspace, released once the Secret or the workspace is being deleted and no ApiToken
uses the workspace."""

from typing import Any

import pytest

from apitoken_operator.core.workspace.protection import (
    ProtectionChange,
    ProtectionView,
    finalizer_patch,
    needs_user_count,
    protection_change,
    protection_due,
    protection_view,
    protects,
)
from apitoken_operator.crd import names
from apitoken_operator.crd.resources import WorkspaceKind

pytestmark = pytest.mark.unit

WS_UID = "ws-uid"
ADD, RELEASE = ProtectionChange.ADD, ProtectionChange.RELEASE


def body(
    *,
    managed: bool = True,
    owner: str = WS_UID,
    finalizers: tuple[str, ...] = (),
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "main-apitoken-credential",
        "namespace": "billing",
        "resourceVersion": "42",
        "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE} if managed else {},
        "ownerReferences": [{"kind": "TokenWorkspace", "name": "main", "uid": owner}],
        "finalizers": list(finalizers),
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T03:00:00Z"
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta}


PROTECTED = (names.FINALIZER_CREDENTIAL_IN_USE,)


def test_view_reads_ownership_finalizer_and_deletion() -> None:
    view = protection_view(body(finalizers=("other", *PROTECTED), deleting=True), WS_UID)
    assert view == ProtectionView(
        present=True,
        ours=True,
        protected=True,
        deleting=True,
        resource_version="42",
        finalizers=("other", *PROTECTED),
    )
    assert protection_view(None, WS_UID) == ProtectionView(present=False)
    assert not protection_view(body(managed=False), WS_UID).ours
    assert not protection_view(body(owner="someone-else"), WS_UID).ours


@pytest.mark.parametrize(
    ("secret", "workspace_deleting", "users", "expected"),
    [
        # A live credential of a live workspace gets the finalizer, once.
        (body(), False, None, ADD),
        (body(finalizers=PROTECTED), False, None, None),
        # Never on a Secret that is not this workspace's credential (SecretConflict).
        (body(managed=False), False, None, None),
        (body(owner="someone-else"), False, None, None),
        # Never added to something being deleted (the API server refuses new finalizers).
        (body(deleting=True), False, None, None),
        (body(), True, 0, None),
        # Held while ApiTokens use the workspace, or while that is not known.
        (body(finalizers=PROTECTED, deleting=True), False, 2, None),
        (body(finalizers=PROTECTED, deleting=True), False, None, None),
        (body(finalizers=PROTECTED), True, 1, None),
        (body(finalizers=PROTECTED), True, None, None),
        # Released once none is left: the namespace's or the workspace's deletion goes on.
        (body(finalizers=PROTECTED, deleting=True), True, 0, RELEASE),
        (body(finalizers=PROTECTED, deleting=True), False, 0, RELEASE),
        (body(finalizers=PROTECTED), True, 0, RELEASE),
        # Gone already: nothing to do.
        (None, True, 0, None),
    ],
)
def test_protection_change(
    secret: dict[str, Any] | None,
    workspace_deleting: bool,
    users: int | None,
    expected: ProtectionChange | None,
) -> None:
    view = protection_view(secret, WS_UID)
    assert protection_change(view, workspace_deleting=workspace_deleting, users=users) == expected


@pytest.mark.parametrize(
    ("secret", "workspace_deleting", "expected"),
    [
        (body(), False, False),
        (body(finalizers=PROTECTED), False, False),
        (body(finalizers=PROTECTED, deleting=True), False, True),
        (body(finalizers=PROTECTED), True, True),
        (body(deleting=True), True, False),
        (None, True, False),
    ],
)
def test_users_are_counted_only_while_a_protected_secret_may_be_released(
    secret: dict[str, Any] | None, workspace_deleting: bool, expected: bool
) -> None:
    view = protection_view(secret, WS_UID)
    assert needs_user_count(view, workspace_deleting=workspace_deleting) is expected


@pytest.mark.parametrize(
    ("secret", "workspace_deleting", "written", "expected"),
    [
        # The common run: protected, nothing deleted: no second read.
        (body(finalizers=PROTECTED), False, False, False),
        (body(finalizers=PROTECTED), False, True, False),
        # Not yet protected, or just created by the run (read as absent before it).
        (body(), False, False, True),
        (None, False, True, True),
        (None, False, False, False),
        # Something is being deleted and the finalizer is on: count the users.
        (body(finalizers=PROTECTED, deleting=True), False, False, True),
        (body(finalizers=PROTECTED), True, False, True),
        # A workspace being deleted never gets it added.
        (None, True, True, False),
    ],
)
def test_protection_due(
    secret: dict[str, Any] | None, workspace_deleting: bool, written: bool, expected: bool
) -> None:
    view = protection_view(secret, WS_UID)
    assert protection_due(view, workspace_deleting, written=written) is expected


GUARD = {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}


@pytest.mark.parametrize(
    ("finalizers", "change", "expected"),
    [
        # No list yet: create it (adding to "/metadata/finalizers/-" would fail).
        ((), ADD, [{"op": "add", "path": "/metadata/finalizers", "value": list(PROTECTED)}]),
        (("other",), ADD, [{"op": "add", "path": "/metadata/finalizers/-", "value": PROTECTED[0]}]),
        # Removed by index, after checking the index still holds it; others stay.
        (
            ("other", *PROTECTED, "third"),
            RELEASE,
            [
                {"op": "test", "path": "/metadata/finalizers/1", "value": PROTECTED[0]},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ],
        ),
    ],
)
def test_finalizer_patch_is_guarded_by_the_resource_version(
    finalizers: tuple[str, ...], change: ProtectionChange, expected: list[dict[str, Any]]
) -> None:
    view = protection_view(body(finalizers=finalizers), WS_UID)
    assert finalizer_patch(view, change) == [GUARD, *expected]


def test_only_a_token_workspace_credential_is_protected() -> None:
    # A ClusterTokenWorkspace's credential lives in the operator's namespace, not with the
    # ApiTokens: a finalizer there would only block deleting that namespace.
    assert protects(WorkspaceKind.TOKEN_WORKSPACE)
    assert not protects(WorkspaceKind.CLUSTER_TOKEN_WORKSPACE)
