"""The few Kubernetes calls the operator makes, over lightkube's AsyncClient.

Reads here are live GETs: a run must see the Secret and status it wrote a moment ago, or it
would refresh twice (the caches, `namespace_cache` and `known_bodies`, hold nothing older than
a run's own last write). Secrets are written by server-side apply with the
operator's field manager, so keys, labels and owner references it stops applying are removed
while fields other managers own are left alone. Status goes through the status subresource as
a JSON merge patch that holds only what changed.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.core.resource import NamespacedResource
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from apitoken_operator.core.bodies import secret_value
from apitoken_operator.crd.resources import WorkspaceKind
from apitoken_operator.kube.resources import (
    FIELD_MANAGER,
    PROTECTION_FIELD_MANAGER,
    ApiToken,
    ClusterTokenWorkspace,
    TokenWorkspace,
)

Body = dict[str, Any]
# Called with (namespace, name) before the operator writes a Secret, and with (namespace,
# name, resourceVersion or None if the write failed) after, so the Secret watch can tell its
# own writes from others' changes (`kube.own_writes`).
OnWriting = Callable[[str, str], None]
OnWritten = Callable[[str, str, str | None], None]


def error_detail(error: Exception) -> str:
    """An API error's status code and reason, else the exception's type; never its message:
    an apiserver may echo what it was sent, and a Secret write carries token values."""
    status = error.status if isinstance(error, ApiError) else None
    code, why = getattr(status, "code", None), getattr(status, "reason", None)
    return f"{code} {why}" if code else type(error).__name__


def write_failure_message(secret: str, kept: str, error: Exception) -> str:
    """What status says when values just obtained could not be written to `secret` (they are
    kept in the backlog): the error's code and reason only (`error_detail`)."""
    return (
        f"writing {secret} failed ({error_detail(error)}); {kept} kept in memory and written "
        "again, without another refresh"
    )


def _not_found(error: ApiError) -> bool:
    return error.status.code == 404


async def _get(client: AsyncClient, kind: Any, name: str, namespace: str | None) -> Body | None:
    """A live GET of the object as a plain dict; None when it does not exist."""
    try:
        obj: Any = await client.get(kind, name, namespace=namespace)
    except ApiError as error:
        if _not_found(error):
            return None
        raise
    return cast(Body, obj.to_dict())


async def get_secret(client: AsyncClient, namespace: str, name: str) -> Body | None:
    return await _get(client, Secret, name, namespace)


async def get_api_token(client: AsyncClient, namespace: str, name: str) -> Body | None:
    return await _get(client, ApiToken, name, namespace)


async def get_workspace(
    client: AsyncClient, kind: WorkspaceKind, name: str, namespace: str | None
) -> Body | None:
    if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE:
        return await _get(client, ClusterTokenWorkspace, name, None)
    return await _get(client, TokenWorkspace, name, namespace)


@dataclass(frozen=True)
class NamespaceState:
    labels: dict[str, str]
    # Being deleted (status.phase Terminating or a deletionTimestamp), or gone.
    terminating: bool


async def namespace_state(client: AsyncClient, namespace: str) -> NamespaceState:
    try:
        ns = await client.get(Namespace, namespace)
    except ApiError as error:
        if _not_found(error):
            return NamespaceState({}, terminating=True)
        raise
    meta, status = ns.metadata, ns.status
    terminating = bool(meta and meta.deletionTimestamp) or bool(
        status and status.phase == "Terminating"
    )
    return NamespaceState(dict((meta.labels if meta else None) or {}), terminating)


async def api_tokens_using(
    client: AsyncClient, kind: WorkspaceKind, name: str, namespace: str | None
) -> list[str]:
    """namespace/name of the ApiTokens whose workspaceRef names this workspace."""
    where = "*" if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE else namespace
    found = []
    async for obj in client.list(ApiToken, namespace=where):
        body: Mapping[str, Any] = cast(Any, obj).to_dict()
        ref = (body.get("spec") or {}).get("workspaceRef") or {}
        ref_kind = ref.get("kind") or WorkspaceKind.TOKEN_WORKSPACE.value
        if ref.get("name") == name and ref_kind == kind.value:
            meta = body.get("metadata") or {}
            found.append(f"{meta.get('namespace')}/{meta.get('name')}")
    return found


async def patch_status(
    client: AsyncClient,
    kind: str,
    name: str,
    namespace: str | None,
    patch: Mapping[str, Any],
) -> Body:
    """Merge-patch the status subresource of an ApiToken or a workspace; the object as the
    apiserver stored it."""
    res: Any = {
        "ApiToken": ApiToken,
        WorkspaceKind.TOKEN_WORKSPACE.value: TokenWorkspace,
        WorkspaceKind.CLUSTER_TOKEN_WORKSPACE.value: ClusterTokenWorkspace,
    }[kind]
    body = {"status": dict(patch)}
    if issubclass(res, NamespacedResource):
        obj = await client.patch(
            res.Status, name, body, namespace=namespace, patch_type=PatchType.MERGE
        )
    else:
        obj = await client.patch(res.Status, name, body, patch_type=PatchType.MERGE)
    return cast(Body, obj.to_dict())


async def patch_secret_metadata(
    client: AsyncClient, namespace: str, name: str, operations: list[dict[str, Any]]
) -> str | None:
    """Apply a JSON patch (a `test` of the resourceVersion first) to an existing Secret, as a
    field manager that owns nothing else there, so the Secret writes of FIELD_MANAGER never
    drop what it set. The new resourceVersion; None when the Secret changed or went since it
    was read (the next run looks again)."""
    try:
        written = await client.patch(
            Secret,
            name,
            cast(Any, operations),
            namespace=namespace,
            patch_type=PatchType.JSON,
            field_manager=PROTECTION_FIELD_MANAGER,
        )
    except ApiError as error:
        # 422: a failed `test` operation (the Secret changed); 404: gone; 409: conflict.
        if error.status.code in (404, 409, 422):
            return None
        raise
    return str(written.metadata.resourceVersion or "") if written.metadata else ""


def resource_version(body: Body | None) -> str | None:
    if body is None:
        return None
    return ((body.get("metadata") or {}).get("resourceVersion")) or None


class SecretApplier:
    """The execute layer's SecretWriter: server-side apply by the operator's field manager.

    Fenced: each write carries the resourceVersion the run read (then the one it last wrote),
    so the apiserver refuses it (409) when anyone wrote the Secret since: a paused old leader
    that wakes up cannot put back an older token. A Secret the run found absent is created
    unconditionally (apply has no create-only form); the write gate still applies. `gate`
    raises when this process may not write (leader election)."""

    def __init__(
        self,
        client: AsyncClient,
        on_written: OnWritten | None = None,
        *,
        on_writing: OnWriting | None = None,
        expected_version: str | None = None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._on_written = on_written
        self._on_writing = on_writing
        self._expected = expected_version
        self._gate = gate
        # The Secret as the apiserver stored it after the last write (for `kube.known_bodies`).
        self.written: Body | None = None

    async def apply(self, manifest: dict[str, Any]) -> None:
        secret = cast(Secret, Secret.from_dict(manifest))
        if self._expected is not None and secret.metadata is not None:
            secret.metadata.resourceVersion = self._expected
        if self._gate is not None:
            self._gate()
        target = secret.metadata
        ns, name = (str(target.namespace), str(target.name)) if target else ("", "")
        if self._on_writing is not None:
            self._on_writing(ns, name)
        version: str | None = None
        try:
            written = await self._client.apply(secret, field_manager=FIELD_MANAGER, force=True)
            self.written = cast(Body, written.to_dict())
            meta = written.metadata
            if meta is not None and meta.resourceVersion:
                version = self._expected = str(meta.resourceVersion)
        finally:
            if self._on_written is not None:
                self._on_written(ns, name, version)


class SecretValueReader:
    """The execute layer's ImportReader: one key of a Secret, read live when needed."""

    def __init__(self, client: AsyncClient, namespace: str, name: str, key: str) -> None:
        self._client = client
        self._namespace = namespace
        self._name = name
        self._key = key

    async def read(self) -> str | None:
        return secret_value(await get_secret(self._client, self._namespace, self._name), self._key)
