"""Whether the operator's credential Secret of a workspace carries its finalizer (pure).

Deleting a namespace deletes every Secret in it at once, while the ApiTokens there wait in
their finalizers to disable or delete their tokens at the service, which they can only do
through the workspace's credential. So, like `kubernetes.io/pvc-protection` on a claim a Pod
still uses, the credential Secret carries `apitoken.dev/credential-in-use` and its deletion
waits until no ApiToken uses the workspace any more. The finalizer is added only to a live
Secret of a live workspace (the API server refuses new finalizers on an object being deleted)
and released once the Secret or the workspace is being deleted and no ApiToken is left.

Only a TokenWorkspace's credential is protected: it lives in the namespace of the ApiTokens
that use it. A ClusterTokenWorkspace's lives in the operator's own namespace, which deleting an
ApiToken's namespace does not touch; holding it there would only keep that namespace from
being deleted once the operator itself is gone.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from apitoken_operator.crd import names
from apitoken_operator.crd.resources import WorkspaceKind


class ProtectionChange(Enum):
    ADD = "add"
    RELEASE = "release"


@dataclass(frozen=True)
class ProtectionView:
    """What the decision needs from the credential Secret as read from the cluster."""

    present: bool
    # Labelled as managed and owned by this workspace: a Secret of that name that is not the
    # operator's (SecretConflict) is never touched.
    ours: bool = False
    protected: bool = False
    deleting: bool = False
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()


def protects(kind: WorkspaceKind) -> bool:
    """Whether the credential Secret of a workspace of this kind carries the finalizer."""
    return kind is WorkspaceKind.TOKEN_WORKSPACE


def protection_view(body: Mapping[str, Any] | None, workspace_uid: str) -> ProtectionView:
    if body is None:
        return ProtectionView(present=False)
    meta: Mapping[str, Any] = body.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []]
    finalizers = tuple(str(f) for f in meta.get("finalizers") or ())
    return ProtectionView(
        present=True,
        ours=labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY_VALUE
        and workspace_uid in owners,
        protected=names.FINALIZER_CREDENTIAL_IN_USE in finalizers,
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=meta.get("resourceVersion"),
        finalizers=finalizers,
    )


def needs_user_count(view: ProtectionView, *, workspace_deleting: bool) -> bool:
    """Whether `protection_change` needs to know how many ApiTokens use the workspace (a list
    call, made only while something is being deleted)."""
    return view.present and view.protected and (view.deleting or workspace_deleting)


def protection_change(
    view: ProtectionView, *, workspace_deleting: bool, users: int | None
) -> ProtectionChange | None:
    """`users`: how many ApiTokens use the workspace, None when not counted (it is only needed
    when `needs_user_count`; unknown is treated as some)."""
    if not view.present or not view.ours:
        return None
    if view.deleting or workspace_deleting:
        if view.protected and users == 0:
            return ProtectionChange.RELEASE
        return None
    return None if view.protected else ProtectionChange.ADD


def finalizer_patch(view: ProtectionView, change: ProtectionChange) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) making `change` to the Secret read as `view`. Guarded by its
    resourceVersion, it fails (409/422) when the Secret changed since and cannot create one
    that went (404), unlike a server-side apply; other finalizers are left alone."""
    guard: dict[str, Any] = {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": view.resource_version,
    }
    finalizer = names.FINALIZER_CREDENTIAL_IN_USE
    if change is ProtectionChange.ADD:
        if not view.finalizers:
            return [guard, {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
        return [guard, {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}]
    index = view.finalizers.index(finalizer)
    path = f"/metadata/finalizers/{index}"
    return [guard, {"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}]


def protection_due(view: ProtectionView, workspace_deleting: bool, *, written: bool) -> bool:
    """Whether a run that read the Secret as `view` (and then maybe wrote it) should look at
    the finalizer again with a live read: a change may be due, or a user count is needed, or
    the run wrote a Secret that was not protected yet (it may have just created it)."""
    if needs_user_count(view, workspace_deleting=workspace_deleting):
        return True
    if written and not view.protected and not workspace_deleting:
        return True
    return protection_change(view, workspace_deleting=workspace_deleting, users=None) is not None


__all__ = [
    "ProtectionChange",
    "ProtectionView",
    "finalizer_patch",
    "needs_user_count",
    "protection_change",
    "protection_due",
    "protection_view",
    "protects",
]
