"""When to restart spec.rolloutRestartTargets: once per re-issued token, never on a refresh.

The managed Secret names the token it holds (its id); `status.rolloutRestart.tokenId` names
the token the targets were last restarted for. They differ only after a re-issue (or an import
of a new hand-made token): then the targets are restarted once, and the status records the
new id, so further writes of the same token (refreshes, metadata) never restart again. The
first token of an ApiToken, and a status that lost the field, are recorded without a restart:
the workloads started after that Secret existed. Without targets the status has no
`rolloutRestart`. No I/O; the clock is passed in.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from apitoken_operator.core.conditions import Signal
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import RolloutRestartStatus, RolloutRestartTarget


@dataclass(frozen=True)
class RestartWorkloads:
    """Set the restart annotation, with `restarted_at` as its value, on each target's pod
    template. The same value again is no change, so a retry never rolls a workload twice."""

    token_id: str
    targets: tuple[RolloutRestartTarget, ...]
    restarted_at: datetime


@dataclass(frozen=True)
class RestartStep:
    action: RestartWorkloads | None
    status: RolloutRestartStatus | None
    # When to look again (a failed restart waits out the retry interval).
    requeue_at: datetime | None = None
    # For Reconciling while a restart waits after a failure.
    waiting: Signal | None = None


def restart_step(
    targets: tuple[RolloutRestartTarget, ...],
    token_id: str,
    status: RolloutRestartStatus | None,
    now: datetime,
    retry_after: timedelta,
) -> RestartStep:
    """What to do about the targets now that the Secret holds `token_id`."""
    if not targets:
        # Not used (or no longer): no status field; listing targets later starts from the
        # token the Secret holds then.
        return RestartStep(None, None)
    done = status.token_id if status is not None else None
    if status is None or done is None or done == token_id:
        # First token (or lost status): recorded, nothing to restart.
        return RestartStep(
            None, RolloutRestartStatus(token_id=token_id) if done is None else status
        )
    failed_at = status.last_failure_time
    if failed_at is not None:
        retry_at = failed_at + retry_after
        if now < retry_at:
            waiting = Signal(
                reasons.ROLLOUT_RESTART_FAILED,
                f"restarting {describe(targets)} failed: {status.last_failure_message or ''}; "
                "retrying",
            )
            return RestartStep(None, status, retry_at, waiting)
    # A retry keeps the first attempt's value: targets patched then are not rolled again.
    at = status.restarted_at if failed_at is not None and status.restarted_at else now
    return RestartStep(RestartWorkloads(token_id, targets, at), status)


def restarted(action: RestartWorkloads) -> RolloutRestartStatus:
    return RolloutRestartStatus(token_id=action.token_id, restarted_at=action.restarted_at)


def restart_failed(
    previous: RolloutRestartStatus | None, action: RestartWorkloads, message: str, now: datetime
) -> RolloutRestartStatus:
    """The targets stay due; `message` names the Kubernetes error's code and reason only."""
    return RolloutRestartStatus(
        token_id=previous.token_id if previous is not None else None,
        restarted_at=action.restarted_at,
        last_failure_time=now,
        last_failure_message=message,
    )


def describe(targets: tuple[RolloutRestartTarget, ...]) -> str:
    return ", ".join(f"{t.kind}/{t.name}" for t in targets)
