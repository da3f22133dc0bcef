"""The token endpoint's statements (and the one member read the bearer check makes), built once:
the fast paths (fast_path.py) compile each once and keep it by identity."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select, update

from apitoken_service.storage.schema import members, tokens

REFRESH_COLUMNS = (
    tokens.c.id,
    tokens.c.workspace,
    tokens.c.owner,
    tokens.c.status,
    tokens.c.expires_at,
    tokens.c.refresh_digest,
    tokens.c.rotated_at,
)
FIND_REFRESH = select(*REFRESH_COLUMNS).where(tokens.c.refresh_digest == bindparam("digest"))
# A presented token and its successor: a grace-period retry, or a refresh that lost a race.
FIND_REFRESH_PAIR = select(*REFRESH_COLUMNS).where(
    or_(
        tokens.c.refresh_digest == bindparam("first"),
        tokens.c.refresh_digest == bindparam("second"),
    )
)
# A walk along a refresh token's rotation chain (domain/service.py): a prebuilt statement of
# CHAIN_DIGESTS parameters (shorter lists repeat their last digest), answered on the fast
# path like the pair above. Built per call, the IN list cost several times a whole refresh.
CHAIN_DIGESTS = 100
FIND_REFRESH_CHAIN = select(*REFRESH_COLUMNS).where(
    tokens.c.refresh_digest.in_([bindparam(f"d{i}") for i in range(CHAIN_DIGESTS)])
)
# The common refresh in one round trip: the presented token is the current one of an active,
# unexpired token. The WHERE clause is the compare-and-swap that decides concurrent refreshes.
ROTATE = (
    update(tokens)
    .where(
        tokens.c.refresh_digest == bindparam("presented"),
        tokens.c.status == "active",
        tokens.c.expires_at > bindparam("now"),
    )
    .values(
        refresh_digest=bindparam("successor"),
        rotated_at=bindparam("now"),
        last_used_at=bindparam("now"),
    )
    .returning(tokens.c.id, tokens.c.workspace, tokens.c.owner, tokens.c.expires_at)
)

TOUCH = (
    update(tokens).where(tokens.c.id == bindparam("token_id")).values(last_used_at=bindparam("now"))
)
DISABLE_BY_ID = (
    update(tokens)
    .where(tokens.c.id == bindparam("token_id"), tokens.c.status == "active")
    .values(status="disabled", disabled_at=bindparam("now"), disabled_reason=bindparam("reason"))
)
GET_MEMBER = select(
    members.c.workspace, members.c.user_name, members.c.role, members.c.created_at
).where(members.c.workspace == bindparam("workspace"), members.c.user_name == bindparam("user"))
