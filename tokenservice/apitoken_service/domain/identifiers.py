"""Identifiers: token ids sortable by creation, names of users and workspaces."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from apitoken_service.clock import to_millis

USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"
WORKSPACE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_TOKEN_ID = re.compile(r"tk_[0-9a-f]{28}")
# C0 controls (NUL among them: PostgreSQL text cannot hold it), DEL, and the bidirectional
# overrides and isolates that make a name display as something else (CVE-2021-42574).
_FORBIDDEN_CHARACTERS = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_USER = re.compile(USER_PATTERN)
_WORKSPACE = re.compile(WORKSPACE_PATTERN)


def new_token_id(now: datetime) -> str:
    """`tk_` + creation time in hex + 64 random bits: ids sort by creation for keyset pages."""
    return f"tk_{to_millis(now):012x}{secrets.token_hex(8)}"


def valid_user(user: str) -> bool:
    return _USER.fullmatch(user) is not None


def valid_workspace(workspace: str) -> bool:
    return _WORKSPACE.fullmatch(workspace) is not None


def quote_token_id(token_id: str) -> str:
    """A token id for a message: quoted when it has the shape of one, else a placeholder, so
    that a value pasted into the path (an access token, say) never comes back in an error."""
    return repr(token_id) if valid_token_id(token_id) else "with that id"


def has_forbidden_characters(text: str) -> bool:
    return _FORBIDDEN_CHARACTERS.search(text) is not None


def valid_token_id(token_id: str) -> bool:
    return _TOKEN_ID.fullmatch(token_id) is not None
