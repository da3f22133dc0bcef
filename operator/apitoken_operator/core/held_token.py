"""The held-token core: rules shared by every refresh token the operator holds in a Secret.

An ApiToken's token and a workspace's operator credential are the same object: a refresh
token in a Secret the operator manages, obtained (issued by a management API, or imported once
by digest), refreshed before its access token expires, renewed or re-issued before the refresh
token ends, its predecessor retired. The two policies (`core.apitoken`, `core.workspace`) decide
*when*; the rules here say how: the action vocabulary, "not our Secret", the backoff after a
failure and the one rounding rule for recorded times. No I/O.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.managed_secret import (
    ObservedSecret,
    SecretShape,
    build_secret,
    metadata_drifted,
)
from apitoken_operator.core.schedule import TimingPolicy, stable_fraction
from apitoken_operator.providers.answers import TokenValues

# ---------------------------------------------------------------------------------------------
# The actions of both policies: one vocabulary for every held token.


class RetireMode(StrEnum):
    DISABLE = "disable"
    DELETE = "delete"


@dataclass(frozen=True)
class Issue:
    """Obtain a new token through the management API (`token_name`, `lifetime_days`, tagged
    with the owner's UID so a sweep finds it should its Secret never be written) and write it
    to the Secret first. `reason` says why: a first token, a re-issue the spec asked for, a
    renewal before the refresh token ends. The token it replaces is retired by a RetireToken
    that follows."""

    reason: str
    token_name: str
    lifetime_days: int


@dataclass(frozen=True)
class Import:
    """Refresh once with a hand-made refresh token (an ApiToken's spec.refreshTokenSecretRef, a
    workspace's bootstrap value), known by its salted digest so it is never presented twice;
    afterwards retire `retire_token_id` (the token it replaces) unless it is the same one."""

    digest: str
    retire_token_id: str | None = None


@dataclass(frozen=True)
class Refresh:
    """Refresh the access token with the Secret's refresh token; persist before anything else."""

    token_id: str


@dataclass(frozen=True)
class WriteSecret:
    """Write the managed Secret with data already known (metadata repair, disable, orphan)."""

    reason: str
    manifest: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RetireToken:
    """Disable or delete a token at the service (both are idempotent there; NotFound is done)."""

    token_id: str
    mode: RetireMode
    reason: str
    # "Kind/name" of the workspace the token lives in; None: the current workspace.
    workspace: str | None = None


@dataclass(frozen=True)
class RemoveFinalizer:
    """Release the owner's finalizer: its cleanup is done (or abandoned)."""

    reason: str


# Actions that call a provider, and so wait out the backoff after a failure.
SERVICE_CALLS = (Issue, Import, Refresh, RetireToken)
# Actions that need the management API, and so a working operator credential.
MANAGEMENT_CALLS = (Issue, RetireToken)
# Actions that put a new token (or a consumed hand-made refresh token) into the Secret.
NEW_TOKEN = (Issue, Import)


@dataclass(frozen=True)
class ServiceToken:
    """A token's metadata as the service lists it (GET tokens?externalRef=UID)."""

    id: str
    status: str  # active, disabled, expired
    external_ref: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A token just obtained: issued, imported or refreshed, before it is written."""

    token_id: str
    values: TokenValues
    refresh_token_expires_at: datetime | None
    obtained_at: datetime
    imported_digest: str | None = None


# ---------------------------------------------------------------------------------------------
# Rules.


def foreign(secret: ObservedSecret, owner_uid: str) -> bool:
    """A Secret of the wanted name that the operator did not make for this owner: never
    written, reported as SecretConflict."""
    return not secret.managed or any(owner != owner_uid for owner in secret.owner_uids)


def repair(shape: SecretShape, secret: ObservedSecret) -> list[WriteSecret]:
    """When nothing else is due: a WriteSecret that puts the managed Secret's metadata (labels,
    annotations, owner) back as `shape` says, with the data it holds, if they drifted."""
    if not metadata_drifted(shape, secret):
        return []
    return [WriteSecret("metadata drifted", build_secret(shape, secret.data))]


def retry_at(
    attempts: int, last_failure_time: datetime | None, owner_uid: str, policy: TimingPolicy
) -> datetime | None:
    """When a service call may be tried again after `attempts` failures in a row: exponential
    backoff with a jitter stable per owner and attempt (so a re-run decides the same)."""
    if attempts <= 0 or last_failure_time is None:
        return None
    delay = backoff_delay(
        attempts,
        base=policy.backoff_base,
        cap=policy.backoff_cap,
        jitter=stable_fraction(owner_uid, str(attempts)),
    )
    return last_failure_time + delay


Status = TypeVar("Status", bound=BaseModel)


def failed(
    status: Status, attempts_field: str, reason: str, message: str, now: datetime, **also: Any
) -> Status:
    """The status after a failed call: one more attempt in `attempts_field` (the two resources
    name it differently: failedRefreshAttempts, failedAttempts), the failure time rounded up.
    `message` must come from the provider clients' exceptions, which never carry token values."""
    return status.model_copy(
        update={
            attempts_field: getattr(status, attempts_field) + 1,
            "last_failure_time": failure_time(now),
            "last_failure_reason": reason,
            "last_failure_message": message,
            **also,
        }
    )


def succeeded(status: Status, attempts_field: str, **also: Any) -> Status:
    """The status after a token was obtained: the failure record cleared."""
    return status.model_copy(
        update={
            attempts_field: 0,
            "last_failure_time": None,
            "last_failure_reason": None,
            "last_failure_message": None,
            **also,
        }
    )


def whole(moment: datetime) -> datetime:
    """Recorded times are whole seconds (what status and RFC 3339 in the Secret carry)."""
    return moment.replace(microsecond=0)


def whole_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else whole(moment)


def whole_up(moment: datetime) -> datetime:
    """Rounded up to a whole second: for recorded times that must not come early."""
    rounded = whole(moment)
    return rounded if rounded == moment else rounded + timedelta(seconds=1)


def failure_time(now: datetime) -> datetime:
    """The recorded time of a failure, rounded up, not down: the backoff is measured from it
    and must not come early. The one rounding rule for failures of every held token."""
    return whole_up(now)


__all__ = [
    "MANAGEMENT_CALLS",
    "NEW_TOKEN",
    "SERVICE_CALLS",
    "Import",
    "Issue",
    "IssuedToken",
    "Refresh",
    "RemoveFinalizer",
    "RetireMode",
    "RetireToken",
    "ServiceToken",
    "WriteSecret",
    "failed",
    "failure_time",
    "foreign",
    "repair",
    "retry_at",
    "succeeded",
    "whole",
    "whole_or_none",
    "whole_up",
]
