"""When a workspace is deleted, the operator disables its own tokens there: every active one
tagged with the workspace's UID, then the current credential (whose access token authorizes
the calls before it)."""

import pytest

from apitoken_operator.core.held_token import ServiceToken
from apitoken_operator.core.workspace.deletion import (
    DeletionStep,
    Retirement,
    credential_tokens_to_retire,
    decide_deletion,
    retirement_waits,
)
from apitoken_operator.crd import reasons

pytestmark = pytest.mark.unit

WS = "ws-uid"


@pytest.mark.parametrize(
    ("current", "tagged", "expected"),
    [
        ("cred", [], ("cred",)),
        # The bootstrap token carries no tag; a renewed one is tagged and listed too.
        ("cred", [ServiceToken("cred", "active", WS)], ("cred",)),
        # A renewal cut short left an active tagged token; retired ones stay as they are.
        (
            "cred",
            [
                ServiceToken("stray", "active", WS),
                ServiceToken("old", "disabled", WS),
                ServiceToken("gone", "expired", WS),
                ServiceToken("cred", "active", WS),
            ],
            ("stray", "cred"),
        ),
        (None, [ServiceToken("stray", "active", WS)], ("stray",)),
        (None, [], ()),
    ],
)
def test_credential_tokens_to_retire(
    current: str | None, tagged: list[ServiceToken], expected: tuple[str, ...]
) -> None:
    assert credential_tokens_to_retire(current, tagged) == expected


@pytest.mark.parametrize(
    ("reason", "waits"),
    [
        (reasons.SERVICE_UNREACHABLE, True),
        (reasons.SERVICE_ERROR, True),
        # Nothing a retry would fix: the deletion goes on without disabling.
        (reasons.UNAUTHORIZED, False),
        (reasons.REFRESH_TOKEN_REJECTED, False),
        (reasons.CREDENTIALS_MISSING, False),
        (reasons.BAD_REQUEST, False),
        (None, False),
    ],
)
def test_retirement_waits_only_for_the_service(reason: str | None, waits: bool) -> None:
    assert retirement_waits(reason) is waits


@pytest.mark.parametrize(
    ("users", "retirement", "abandon", "step"),
    [
        (["apps/a"], None, False, DeletionStep.WAIT_FOR_USERS),
        (["apps/a"], None, True, DeletionStep.WAIT_FOR_USERS),  # abandon is for the service only
        ([], None, False, DeletionStep.RETIRE_CREDENTIAL),
        ([], Retirement(False, "unreachable"), False, DeletionStep.WAIT_FOR_RETIREMENT),
        ([], Retirement(False, "unreachable"), True, DeletionStep.RELEASE),
        ([], Retirement(True, "disabled 2 token(s)"), False, DeletionStep.RELEASE),
    ],
)
def test_workspace_deletion_is_a_decision(
    users: list[str], retirement: Retirement | None, abandon: bool, step: DeletionStep
) -> None:
    decision = decide_deletion(users, retirement, abandon=abandon)
    assert decision.step is step
    waits = step in (DeletionStep.WAIT_FOR_USERS, DeletionStep.WAIT_FOR_RETIREMENT)
    assert bool(decision.message) is waits
