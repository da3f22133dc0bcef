"""spec.rolloutRestartTargets: the pure decision (table), its place in `decide` (a re-issue
restarts once, a refresh never), and the executor over a fake patcher (refusals recorded, a
retry reuses the annotation value)."""

import asyncio
import dataclasses
from datetime import datetime, timedelta

import pytest

from apitoken_operator.core.apitoken.decide import Observation, decide
from apitoken_operator.core.apitoken.rollout import (
    RestartStep,
    RestartWorkloads,
    restart_step,
)
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    RolloutRestartStatus,
    RolloutRestartTarget,
)
from apitoken_operator.execution.rollout import RestartRefused, restart_workloads
from support.clock import T0
from unit.test_operator_reconcile import POLICY, fresh, issue, refreshed_at

pytestmark = pytest.mark.unit

MINUTE = timedelta(minutes=1)
RETRY = timedelta(minutes=5)
WEB = RolloutRestartTarget.model_validate({"kind": "Deployment", "name": "web"})
DB = RolloutRestartTarget.model_validate({"kind": "StatefulSet", "name": "db"})
TARGETS = (WEB, DB)


def done(token_id: str | None, **kw: object) -> RolloutRestartStatus:
    return RolloutRestartStatus.model_validate({"tokenId": token_id, **kw})


FAILED = done("tok-1", restartedAt=T0, lastFailureTime=T0, lastFailureMessage="403 Forbidden")

CASES = [
    # (id, targets, token in the Secret, status, now, expected)
    (
        "first token is recorded, not restarted",
        TARGETS,
        "tok-1",
        None,
        T0,
        RestartStep(None, done("tok-1")),
    ),
    ("same token: nothing (a refresh)", TARGETS, "tok-1", done("tok-1"), T0, None),
    (
        "re-issued token: restart now",
        TARGETS,
        "tok-2",
        done("tok-1"),
        T0,
        RestartStep(RestartWorkloads("tok-2", TARGETS, T0), done("tok-1")),
    ),
    (
        "no targets (any more): no status field",
        (),
        "tok-2",
        done("tok-1"),
        T0,
        RestartStep(None, None),
    ),
    (
        "after a failure: wait out the retry interval",
        TARGETS,
        "tok-2",
        FAILED,
        T0 + MINUTE,
        "waits",
    ),
    (
        "retry with the first attempt's value",
        TARGETS,
        "tok-2",
        FAILED,
        T0 + RETRY,
        RestartStep(RestartWorkloads("tok-2", TARGETS, T0), FAILED),
    ),
]


@pytest.mark.parametrize(
    ("targets", "token_id", "status", "now", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_restart_step(
    targets: tuple[RolloutRestartTarget, ...],
    token_id: str,
    status: RolloutRestartStatus | None,
    now: datetime,
    expected: RestartStep | str | None,
) -> None:
    step = restart_step(targets, token_id, status, now, RETRY)
    if expected is None:
        assert step == RestartStep(None, status)
    elif expected == "waits":
        assert step.action is None and step.requeue_at == T0 + RETRY
        assert step.waiting is not None
        assert step.waiting.reason == reasons.ROLLOUT_RESTART_FAILED
        assert "Deployment/web, StatefulSet/db" in step.waiting.message
    else:
        assert step == expected


def _with_targets(obs: Observation) -> Observation:
    spec = ApiTokenSpec.model_validate(
        {
            "workspaceRef": {"name": "main"},
            "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}],
        }
    )
    return dataclasses.replace(obs, token=dataclasses.replace(obs.token, spec=spec))


def test_decide_restarts_once_after_a_reissue_and_never_on_a_refresh() -> None:
    steady = issue(_with_targets(fresh()), "tok-1", T0)
    status = steady.obs.token.status
    assert status.rollout_restart == done("tok-1")  # the first token: no restart
    # A refresh later: the same token, no restart.
    later = T0 + timedelta(minutes=50)
    refreshed = refreshed_at(steady, later)
    assert not any(
        isinstance(a, RestartWorkloads) for a in decide(refreshed.obs, later, POLICY).actions
    )
    # A re-issue: the Secret holds tok-2, the targets were restarted for tok-1.
    reissued = issue(refreshed.obs, "tok-2", later, n=2)
    actions = decide(reissued.obs, later, POLICY).actions
    restarts = [a for a in actions if isinstance(a, RestartWorkloads)]
    assert restarts == [RestartWorkloads("tok-2", (WEB,), later)]
    # Once recorded, further decisions (and refreshes) do not restart again.
    recorded = reissued.with_status(rollout_restart=done("tok-2", restartedAt=later))
    again = refreshed_at(recorded, later + MINUTE)
    assert not any(
        isinstance(a, RestartWorkloads) for a in decide(again.obs, later + MINUTE, POLICY).actions
    )


class FakePatcher:
    def __init__(
        self, refuse: frozenset[str] = frozenset(), missing: frozenset[str] = frozenset()
    ) -> None:
        self.refuse, self.missing = refuse, missing
        self.calls: list[tuple[str, str, str]] = []

    async def restart(self, namespace: str, target: RolloutRestartTarget, value: str) -> bool:
        self.calls.append((namespace, f"{target.kind}/{target.name}", value))
        if target.name in self.refuse:
            raise RestartRefused("403 Forbidden", forbidden=True)
        return target.name not in self.missing


def test_executor_patches_every_target_and_records_the_token() -> None:
    patcher = FakePatcher(missing=frozenset({"db"}))
    action = RestartWorkloads("tok-2", TARGETS, T0)
    status, event = asyncio.run(restart_workloads(patcher, "apps", action, done("tok-1"), T0))
    assert status == done("tok-2", restartedAt=T0)
    assert [c[1] for c in patcher.calls] == ["Deployment/web", "StatefulSet/db"]
    assert {c[2] for c in patcher.calls} == {"2026-11-28T12:00:00Z"}
    assert (event.type, event.reason) == ("Normal", reasons.ROLLOUT_RESTARTED)
    assert "StatefulSet/db not found" in event.message


def test_executor_names_the_missing_permission_and_keeps_the_targets_due() -> None:
    patcher = FakePatcher(refuse=frozenset({"web"}))
    action = RestartWorkloads("tok-2", TARGETS, T0)
    now = T0 + MINUTE
    status, event = asyncio.run(restart_workloads(patcher, "apps", action, done("tok-1"), now))
    # db was restarted all the same; the retry reuses T0, so db is not rolled out again.
    assert len(patcher.calls) == 2
    assert status.token_id == "tok-1" and status.restarted_at == T0
    assert status.last_failure_time == now
    assert (event.type, event.reason) == ("Warning", reasons.ROLLOUT_RESTART_FAILED)
    for words in (
        "Deployment web: 403 Forbidden",
        "patch on deployments (apps)",
        "rbac.rolloutRestart",
    ):
        assert words in event.message
    retry = restart_step(TARGETS, "tok-2", status, now + RETRY, RETRY)
    assert retry.action == RestartWorkloads("tok-2", TARGETS, T0)


def test_spec_refuses_other_kinds() -> None:
    with pytest.raises(ValueError):
        RolloutRestartTarget.model_validate({"kind": "CronJob", "name": "x"})
