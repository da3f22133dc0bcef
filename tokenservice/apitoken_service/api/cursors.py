"""Opaque page cursors (the last key of the previous page, base64url)."""

from __future__ import annotations

import base64
import binascii

from apitoken_service.domain.identifiers import has_forbidden_characters

CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"


def encode_cursor(last_key: str | None) -> str | None:
    if last_key is None:
        return None
    return base64.urlsafe_b64encode(last_key.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> str | None:
    """The key inside a cursor; raises ValueError when it is not one of ours."""
    if cursor is None:
        return None
    try:
        key = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        text = key.decode()
        if not text or has_forbidden_characters(text):
            raise ValueError("not a key of ours")
        return text
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor") from None


def after_key(cursor: str | None) -> str | None:
    """The keyset position of a cursor (already checked against CURSOR_PATTERN). One that is
    not ours is a position all the same, its own text: the schema and the behaviour agree that
    every cursor of the documented form is accepted, and nothing but base64url reaches SQL."""
    try:
        return decode_cursor(cursor)
    except ValueError:
        return cursor
