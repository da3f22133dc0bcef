"""Carrying out a RestartWorkloads decision over a port (`WorkloadPatcher`, see kube.workloads).

A target that does not exist is skipped (it has no Pods holding the old token). A refused
patch does not stop the ApiToken's reconcile: it is recorded in status and an event, and the
core retries after the recheck interval with the same annotation value, so the targets already
patched are not rolled out again.
"""

from datetime import datetime
from typing import Protocol

from apitoken_operator.core.apitoken.rollout import (
    RestartWorkloads,
    describe,
    restart_failed,
    restarted,
)
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import RolloutRestartStatus, RolloutRestartTarget
from apitoken_operator.execution.held_token import Event

# The resource names RBAC rules use, for the message that says which permission is missing.
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


class RestartRefused(Exception):
    """The apiserver refused the patch; `detail` is the error's code and reason only."""

    def __init__(self, detail: str, *, forbidden: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.forbidden = forbidden


class WorkloadPatcher(Protocol):
    async def restart(self, namespace: str, target: RolloutRestartTarget, value: str) -> bool:
        """Set the restart annotation on the target's pod template to `value`; False when the
        target does not exist. Raises RestartRefused."""
        ...


def _refused(namespace: str, target: RolloutRestartTarget, error: RestartRefused) -> str:
    where = f"{target.kind} {target.name}: {error.detail}"
    if not error.forbidden:
        return where
    return (
        f"{where}; the operator needs patch on {PLURALS[target.kind]} (apps) in namespace "
        f"{namespace}: set the chart value rbac.rolloutRestart=true or apply "
        "deploy/rbac-rollout-restart.yaml"
    )


async def restart_workloads(
    patcher: WorkloadPatcher,
    namespace: str,
    action: RestartWorkloads,
    previous: RolloutRestartStatus | None,
    now: datetime,
) -> tuple[RolloutRestartStatus, Event]:
    """Patch every target (one refusal does not keep the others from restarting); the status
    to record and the event to post."""
    value = action.restarted_at.isoformat().replace("+00:00", "Z")
    done: list[RolloutRestartTarget] = []
    missing: list[RolloutRestartTarget] = []
    refusals: list[str] = []
    for target in action.targets:
        try:
            (done if await patcher.restart(namespace, target, value) else missing).append(target)
        except RestartRefused as error:
            refusals.append(_refused(namespace, target, error))
    if refusals:
        message = "; ".join(refusals)
        event = Event("Warning", reasons.ROLLOUT_RESTART_FAILED, f"restart failed: {message}")
        return restart_failed(previous, action, message, now), event
    message = f"restarted {describe(tuple(done)) or 'nothing'} for token {action.token_id}"
    if missing:
        message += f" ({describe(tuple(missing))} not found)"
    return restarted(action), Event("Normal", reasons.ROLLOUT_RESTARTED, message)
