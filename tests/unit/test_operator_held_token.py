"""Rules of the held-token core that both policies (ApiToken, workspace credential) share."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from apitoken_operator.core.apitoken.decide import (
    Observation,
    WorkspaceView,
    failed_state,
)
from apitoken_operator.core.held_token import failure_time, retry_at
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import (
    CredentialObservation,
    credential_failed_state,
)
from apitoken_operator.crd.resources import WorkspaceKind
from support.held_tokens import WORKSPACE_SPEC, api_token_view, workspace_object

pytestmark = pytest.mark.unit


def api_token_failure(now: datetime) -> datetime | None:
    obs = Observation(
        token=api_token_view(),
        secret=None,
        workspace=WorkspaceView(
            kind=WorkspaceKind.TOKEN_WORKSPACE, name="main", spec=WORKSPACE_SPEC
        ),
    )
    return failed_state(obs, "ServiceError", "boom", now).last_failure_time


def credential_failure(now: datetime) -> datetime | None:
    obs = CredentialObservation(workspace=workspace_object(), secret=None, bootstrap_digest=None)
    return credential_failed_state(obs, "ServiceError", "boom", now).last_failure_time


@pytest.mark.parametrize("record", [api_token_failure, credential_failure])
@pytest.mark.parametrize(
    ("now", "recorded"),
    [
        # A failure is recorded rounded up to the whole second: the backoff counts from it and
        # must never come early. A whole second stays as it is.
        (datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)),
        (
            datetime(2026, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC),
            datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC),
        ),
        (datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)),
    ],
)
def test_both_policies_round_a_failure_time_up(
    record: Callable[[datetime], datetime | None], now: datetime, recorded: datetime
) -> None:
    assert record(now) == recorded == failure_time(now)


def test_backoff_grows_from_the_recorded_failure_and_never_comes_early() -> None:
    policy = TimingPolicy()
    failed = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert retry_at(0, failed, "uid", policy) is None
    first, second = retry_at(1, failed, "uid", policy), retry_at(2, failed, "uid", policy)
    assert first is not None and second is not None
    assert failed < first < second
    capped = retry_at(30, failed, "uid", policy)
    assert capped is not None and capped <= failed + policy.backoff_cap
