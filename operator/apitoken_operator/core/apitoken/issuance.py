"""Does the token need to be re-issued, and why? Small predicates, each returning a reason.

The fields that define a token (workspaceRef, tokenName, lifetimeDays) are fingerprinted into
status.issuedSpecHash when the token is issued; fields that do not need a new token (the Secret
template, refreshPercent, renewBefore, deletionPolicy) are not part of it.
"""

import hashlib
from datetime import datetime

from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import ApiTokenStatus, ResolvedApiTokenSpec


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def issued_spec_hash(spec: ResolvedApiTokenSpec) -> str:
    """One part per field, so a change can be named: "<workspace>.<tokenName>.<lifetimeDays>"."""
    workspace = _short(f"{spec.workspace_kind}/{spec.workspace_name}")
    return f"{workspace}.{_short(spec.token_name)}.{spec.lifetime_days}"


def spec_change_reason(spec: ResolvedApiTokenSpec, recorded: str | None) -> str | None:
    """Which token-defining field changed since the token was issued, if any."""
    if recorded is None:
        return None
    current = issued_spec_hash(spec).split(".")
    before = recorded.split(".")
    if len(before) != len(current):
        return reasons.WORKSPACE_CHANGED
    for part_now, part_then, reason in zip(
        current,
        before,
        (reasons.WORKSPACE_CHANGED, reasons.TOKEN_NAME_CHANGED, reasons.LIFETIME_CHANGED),
        strict=True,
    ):
        if part_now != part_then:
            return reason
    return None


def reissue_requested(annotation: str | None, status: ApiTokenStatus) -> bool:
    """A new value of the reissue annotation, not yet handled (like `cmctl renew`)."""
    return bool(annotation) and annotation != status.last_reissue_request


def reissue_reason(
    *,
    spec: ResolvedApiTokenSpec,
    status: ApiTokenStatus,
    reissue_annotation: str | None,
    renewal_at: datetime | None,
    now: datetime,
) -> str | None:
    """The first reason that asks for a new token, in order of what a person did last."""
    if reissue_requested(reissue_annotation, status):
        return reasons.REISSUE_REQUESTED
    changed = spec_change_reason(spec, status.issued_spec_hash)
    if changed is not None:
        return changed
    if status.last_failure_reason == reasons.REFRESH_TOKEN_REJECTED:
        return reasons.TOKEN_REVOKED
    if renewal_at is not None and now >= renewal_at:
        return reasons.RENEWAL_DUE
    return None
