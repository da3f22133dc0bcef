"""A workspace's deletion, decided like an ApiToken's: from what is observed, what to do. No I/O.

A workspace goes in three steps, each waiting on the one before: while ApiTokens use it they
still need its credential to clean up at the service, so it waits for them; then the operator's
own tokens there are disabled (`credential_tokens_to_retire`), waiting only while the service
cannot be reached (`retirement_waits`) unless apitoken.dev/abandon is set; then the credential
Secret's finalizer is released and the workspace's own finalizer goes.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from apitoken_operator.core.held_token import ServiceToken
from apitoken_operator.crd import names, reasons


class DeletionStep(StrEnum):
    WAIT_FOR_USERS = "wait-for-users"
    RETIRE_CREDENTIAL = "retire-credential"
    WAIT_FOR_RETIREMENT = "wait-for-retirement"
    RELEASE = "release"


@dataclass(frozen=True)
class Retirement:
    """How disabling the operator's own tokens went (None in `decide_deletion`: not tried)."""

    # False: the service could not be reached; worth waiting for.
    done: bool
    message: str


@dataclass(frozen=True)
class DeletionDecision:
    step: DeletionStep
    # Why it waits (for the TemporaryError Kopf shows); empty when it does not.
    message: str = ""


def decide_deletion(
    users: Sequence[str], retirement: Retirement | None, *, abandon: bool
) -> DeletionDecision:
    """`users`: the ApiTokens using the workspace; `retirement`: None until it was tried."""
    if users:
        return DeletionDecision(
            DeletionStep.WAIT_FOR_USERS,
            f"waiting for {len(users)} ApiToken(s) using it: {', '.join(users[:5])}",
        )
    if retirement is None:
        return DeletionDecision(DeletionStep.RETIRE_CREDENTIAL)
    if not retirement.done and not abandon:
        return DeletionDecision(
            DeletionStep.WAIT_FOR_RETIREMENT,
            "waiting to disable the operator's own token at the service: "
            f"{retirement.message} (set {names.ANNOTATION_ABANDON}=true to leave it)",
        )
    return DeletionDecision(DeletionStep.RELEASE)


def credential_tokens_to_retire(
    current_token_id: str | None, tagged: Sequence[ServiceToken]
) -> tuple[str, ...]:
    """When a workspace is deleted and no ApiToken uses it: the operator's own tokens there to
    disable, so none outlives it. Those tagged with the workspace's UID that are still active
    (left by a renewal cut short), then the current credential last: disabling it kills only
    its refresh token, so its access token still authorizes the calls before."""
    others = [t.id for t in tagged if t.status == "active" and t.id != current_token_id]
    return (*others, current_token_id) if current_token_id else tuple(others)


def retirement_waits(reason: str | None) -> bool:
    """Whether disabling the operator's own tokens at a workspace's deletion, having failed for
    `reason`, is worth waiting for: only while the service cannot be reached or fails. A refused
    or missing credential will not get better; the deletion goes on without."""
    return reason in (reasons.SERVICE_UNREACHABLE, reasons.SERVICE_ERROR)
