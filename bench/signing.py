"""The baseline: how many access tokens one process can sign per second.

The loop does what the service does for each refresh grant and nothing else: build the claims
of DESIGN.md (`iss`, `sub`, `aud`, `ws`, `tid`, `jti`, `iat`, `exp`) and sign them with pyjwt,
EdDSA over an Ed25519 key loaded once, with a `kid` header. No I/O, no HTTP, no database: the
ceiling a refresh grant in one Python process could approach.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apitoken_service.signing import KeyRing


@dataclass(frozen=True)
class SigningResult:
    signatures: int
    elapsed_s: float
    token_bytes: int

    @property
    def per_second(self) -> float:
        return self.signatures / self.elapsed_s


def _claims(now: int) -> dict[str, Any]:
    return {
        "iss": "http://127.0.0.1:8080",
        "sub": "bench-user",
        "aud": "apitoken",
        "ws": "bench",
        "tid": "tok_0123456789abcdef",
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 3600,
    }


def sign_access_token(key: Ed25519PrivateKey, kid: str, now: int) -> str:
    return jwt.encode(_claims(now), key, algorithm="EdDSA", headers={"kid": kid})


def measure_signing(duration_s: float = 3.0, max_signatures: int = 2_000_000) -> SigningResult:
    """The baseline the targets use: pyjwt's `jwt.encode`, EdDSA, in a tight loop."""
    key = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(8)
    return _measure(lambda now: sign_access_token(key, kid, now), duration_s, max_signatures)


def measure_service_signing(
    duration_s: float = 3.0, max_signatures: int = 2_000_000
) -> SigningResult:
    """The same claims through the service's own JWS assembly (`KeyRing.sign`: the constant
    header encoded once, then Ed25519 directly), which is what a refresh grant pays."""
    ring = KeyRing(secrets.token_urlsafe(8), Ed25519PrivateKey.generate(), [])
    return _measure(lambda now: ring.sign(_claims(now)), duration_s, max_signatures)


def _measure(sign: Callable[[int], str], duration_s: float, max_signatures: int) -> SigningResult:
    """Sign in a tight loop for `duration_s` (or `max_signatures`), after a short warm-up."""
    token = ""
    for _ in range(200):
        token = sign(int(time.time()))
    signatures = 0
    start = time.perf_counter()
    deadline = start + duration_s
    now = time.perf_counter()
    while now < deadline and signatures < max_signatures:
        # Check the clock every 100 signatures so timing costs nothing measurable.
        for _ in range(100):
            token = sign(int(time.time()))
        signatures += 100
        now = time.perf_counter()
    return SigningResult(signatures=signatures, elapsed_s=now - start, token_bytes=len(token))
