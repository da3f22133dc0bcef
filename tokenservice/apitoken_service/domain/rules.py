"""Small pure rules shared by the domain and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from apitoken_service.domain.records import TokenRecord

EffectiveStatus = Literal["active", "disabled", "expired"]

MIN_LIFETIME_DAYS = 1
MAX_LIFETIME_DAYS = 365
MAX_NAME_LENGTH = 200
MAX_EXTERNAL_REF_LENGTH = 256
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_BULK_IDS = 1000


def effective_status(token: TokenRecord, now: datetime) -> EffectiveStatus:
    if token.status == "disabled":
        return "disabled"
    if token.expires_at <= now:
        return "expired"
    return "active"


def can_see(caller_user: str, caller_is_admin: bool, token: TokenRecord) -> bool:
    """Members see their own tokens, admins every token of their workspace."""
    return caller_is_admin or token.owner == caller_user
