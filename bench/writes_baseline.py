"""The baseline with the operator's writes: what a plain script costs doing exactly the API
calls the operator makes per new ApiToken, so the convergence's gap splits into the calls the
design makes (this baseline against the issue's) and the operator's own overhead (the
operator against this baseline).

Per ApiToken, at the same concurrency, against the same apiserver and token service:
the bench's create; the finalizer's JSON patch (tested against the resourceVersion); a GET of
the Secret (absent); the token at the service; a server-side apply of the Secret the operator
would write (its labels, annotations and owner reference, from the operator's own builder);
the status patch; and the `Generated` event (from the operator's own event builder)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Secret
from lightkube.types import PatchType

from apitoken_operator.core.managed_secret import Owner, SecretShape, build_secret
from apitoken_operator.crd import names
from apitoken_operator.kube.events import event_manifest
from apitoken_operator.kube.finalizers import add_patch
from apitoken_operator.kube.resources import ApiToken
from bench.jobs import timed
from support.operator import ServiceAdmin

FIELD_MANAGER = "bench-writes-baseline"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def writes_baseline(
    kubeconfig: Path,
    namespace: str,
    admin: ServiceAdmin,
    count: int,
    concurrency: int,
    spec: Callable[[str], dict[str, Any]],
) -> float:
    client = AsyncClient(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)
    bearer = admin._bearer()
    url = f"{admin.service.base_url}/api/v1/workspaces/{admin.service.workspace}/tokens"
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    def one(i: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            name = f"tok-{i:05d}"
            meta = ObjectMeta(name=name, namespace=namespace)
            created = cast(Any, await client.create(ApiToken(metadata=meta, spec=spec(name))))
            body = cast(dict[str, Any], created.to_dict())
            patch = add_patch(body, names.FINALIZER)
            patched = await client.patch(
                ApiToken, name, cast(Any, patch), namespace=namespace, patch_type=PatchType.JSON
            )
            body = cast(dict[str, Any], cast(Any, patched).to_dict())
            uid = str(body["metadata"]["uid"])
            try:
                await client.get(Secret, name, namespace=namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
            response = await http.post(
                url, json={"name": name, "lifetimeDays": 30, "externalRef": uid}, headers=bearer
            )
            response.raise_for_status()
            issued = response.json()
            now = datetime.now(UTC)
            shape = SecretShape(
                namespace=namespace,
                name=name,
                owner=Owner(name, uid),
                set_owner_reference=True,
                token_id=issued["id"],
                refresh_token_expires_at=now + timedelta(days=30),
                template_labels={},
                template_annotations={},
                refreshed_at=now,
                next_refresh_at=now + timedelta(minutes=3),
            )
            data = {
                names.KEY_ACCESS_TOKEN: issued["accessToken"],
                names.KEY_REFRESH_TOKEN: issued["refreshToken"],
                names.KEY_TOKEN_TYPE: "Bearer",
                names.KEY_EXPIRES_AT: issued["accessTokenExpiresAt"],
            }
            manifest = build_secret(shape, data)
            await client.apply(
                cast(Secret, Secret.from_dict(manifest)), field_manager=FIELD_MANAGER, force=True
            )
            condition = {
                "type": "Ready",
                "status": "True",
                "reason": "Generated",
                "message": "baseline",
                "lastTransitionTime": _stamp(now),
                "observedGeneration": 1,
            }
            status = {"tokenId": issued["id"], "observedGeneration": 1, "conditions": [condition]}
            await client.patch(
                ApiToken.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
            event = event_manifest(
                body,
                type="Normal",
                reason="Generated",
                message=f"generated token {issued['id']}",
                now=now,
                instance="bench",
            )
            await client.create(cast(Event, Event.from_dict(event)))

        return job

    return await timed(concurrency, [one(i) for i in range(count)], client, http)
