"""Refresh token values: generation, digests, and the derived successor used for rotation.

Only digests are stored. A rotated refresh token is an HMAC of the previous one under a server
key, so a client retrying within the grace period gets the very same successor while the service
stores no value at all.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

PREFIX = "apit_rt_"
# 32 random bytes = 256 bits; the HMAC successor has the same length.
_RANDOM_BYTES = 32


def _encode(raw: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_refresh_token() -> str:
    """A fresh refresh token: the recognisable prefix and 256 random bits."""
    return _encode(secrets.token_bytes(_RANDOM_BYTES))


def looks_like_refresh_token(value: str) -> bool:
    return value.startswith(PREFIX) and 40 <= len(value) <= 128


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 with the key already absorbed: copied per use, which halves an HMAC's cost
    (the unknown-token path computes about 200)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _hmac(key: bytes, message: str) -> bytes:
    mac = _keyed(key).copy()
    mac.update(message.encode("utf-8"))
    return mac.digest()


def digest(digest_key: bytes, refresh_token: str) -> bytes:
    """The only form in which a refresh token is stored (HMAC-SHA256 under a server key)."""
    return _hmac(digest_key, refresh_token)


def successor(rotation_key: bytes, refresh_token: str) -> str:
    """The refresh token that replaces `refresh_token` on rotation; deterministic by design."""
    return _encode(_hmac(rotation_key, refresh_token))
