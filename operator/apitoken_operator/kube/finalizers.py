"""The ApiToken's finalizer, kept by its runs (Kopf does not watch ApiTokens).

A JSON patch each way, so that another controller's finalizers are never touched and a
concurrent change is never overwritten: adding tests the resourceVersion the run read (the
whole list is written), removing tests that the index still holds ours. A failed test is a
422: the run reads again and decides again.
"""

from collections.abc import Mapping
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from apitoken_operator.kube.resources import ApiToken

Patch = list[dict[str, Any]]


def _finalizers(body: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in (body.get("metadata") or {}).get("finalizers") or []]


def add_patch(body: Mapping[str, Any], finalizer: str) -> Patch | None:
    """The patch that adds `finalizer` to the object read as `body`; None when it is there."""
    current = _finalizers(body)
    if finalizer in current:
        return None
    version = (body.get("metadata") or {}).get("resourceVersion")
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": [*current, finalizer]},
    ]


def remove_patch(body: Mapping[str, Any], finalizer: str) -> Patch | None:
    """The patch that removes `finalizer` from the object read as `body`; None when absent."""
    current = _finalizers(body)
    if finalizer not in current:
        return None
    at = f"/metadata/finalizers/{current.index(finalizer)}"
    return [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]


async def patch_api_token(
    client: AsyncClient, namespace: str, name: str, patch: Patch
) -> dict[str, Any] | None:
    """Apply `patch` to the ApiToken; its new body, or None when a test failed or it is gone
    (the caller reads it again)."""
    try:
        obj: Any = await client.patch(
            ApiToken, name, cast(Any, patch), namespace=namespace, patch_type=PatchType.JSON
        )
    except ApiError as error:
        if error.status.code in (404, 409, 422):
            return None
        raise
    return cast(dict[str, Any], obj.to_dict())
