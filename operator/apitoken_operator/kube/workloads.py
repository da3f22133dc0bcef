"""The execute layer's WorkloadPatcher: the restart annotation on a workload's pod template,
the way `kubectl rollout restart` does it (a merge patch; a changed template rolls it out)."""

from collections.abc import Callable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.types import PatchType

from apitoken_operator.crd.names import ANNOTATION_RESTARTED_AT
from apitoken_operator.crd.resources import RolloutRestartKind, RolloutRestartTarget
from apitoken_operator.execution.rollout import RestartRefused
from apitoken_operator.kube.objects import error_detail
from apitoken_operator.kube.resources import FIELD_MANAGER

_RESOURCES: dict[RolloutRestartKind, Any] = {
    RolloutRestartKind.DEPLOYMENT: Deployment,
    RolloutRestartKind.STATEFUL_SET: StatefulSet,
    RolloutRestartKind.DAEMON_SET: DaemonSet,
}


class WorkloadRestarter:
    def __init__(self, client: AsyncClient, gate: Callable[[], None] | None = None) -> None:
        self._client = client
        # Leader election's write gate (`kube.lease`): only the holder restarts workloads.
        self._gate = gate

    async def restart(self, namespace: str, target: RolloutRestartTarget, value: str) -> bool:
        if self._gate is not None:
            self._gate()
        patch = {
            "spec": {"template": {"metadata": {"annotations": {ANNOTATION_RESTARTED_AT: value}}}}
        }
        try:
            await self._client.patch(
                _RESOURCES[target.kind],
                target.name,
                patch,
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise RestartRefused(error_detail(error), forbidden=error.status.code == 403) from None
        return True
