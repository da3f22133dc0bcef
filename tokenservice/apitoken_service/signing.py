"""Access-token signing keys (Ed25519, EdDSA JWTs), the JWKS, and service secrets.

Keys are created once, stored sealed under the key-encryption key, and loaded into a `KeyRing`
at start-up (and again every few seconds, so replicas see a rotation). Nothing is parsed per
request. A rotated key stays in the JWKS until every token it signed has expired.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from apitoken_service.domain.ports import Storage
from apitoken_service.domain.records import SigningKeyRecord
from apitoken_service.key_encryption import KeyEncryptionKey

ALGORITHM = "EdDSA"
DIGEST_KEY = "refresh-digest"
ROTATION_KEY = "refresh-rotation"
# Settings.access_token_ttl_seconds allows at most a day; clocks may disagree by a minute.
MAX_ACCESS_TOKEN_TTL_SECONDS = 86_400
CLOCK_SKEW_SECONDS = 60


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


# One encoder for every token: json.dumps builds a new one per call when given separators.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _compact_json(value: dict[str, Any]) -> bytes:
    return _COMPACT.encode(value).encode()


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint of an OKP key, used as the `kid`."""
    canonical = json.dumps(
        {"crv": public_jwk["crv"], "kty": public_jwk["kty"], "x": public_jwk["x"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    )


def _public_jwk(public_key: Ed25519PublicKey) -> dict[str, Any]:
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    assert isinstance(jwk, dict)
    return {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"]}


def new_signing_key(kek: KeyEncryptionKey, now: datetime) -> SigningKeyRecord:
    private_key = Ed25519PrivateKey.generate()
    public = _public_jwk(private_key.public_key())
    kid = _thumbprint(public)
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    published = {**public, "kid": kid, "use": "sig", "alg": ALGORITHM}
    return SigningKeyRecord(
        kid=kid,
        algorithm=ALGORITHM,
        sealed_private_key=kek.seal(raw, f"signing-key:{kid}"),
        public_jwk=json.dumps(published, sort_keys=True),
        created_at=now,
        retired_at=None,
        publish_until=None,
    )


@dataclass(frozen=True)
class _Verifier:
    kid: str
    jwk: dict[str, Any]
    public_key: Ed25519PublicKey
    publish_until: datetime | None


class KeyRing:
    """The signing key in use and every public key still published."""

    def __init__(
        self, signer_kid: str, signer: Ed25519PrivateKey, verifiers: list[_Verifier]
    ) -> None:
        self.signer_kid = signer_kid
        self._signer = signer
        # The JOSE header never changes for a key: encoded once, as pyjwt would encode it.
        self._header_segment = _b64url(
            json.dumps(
                {"alg": ALGORITHM, "kid": signer_kid, "typ": "JWT"},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
        )
        self._verifiers = {v.kid: v for v in verifiers}

    @classmethod
    def from_records(cls, records: list[SigningKeyRecord], kek: KeyEncryptionKey) -> KeyRing:
        if not records:
            raise RuntimeError("no signing key in the database")
        active = [r for r in records if r.retired_at is None] or records
        # One active key after a rotation; after a first-start race, the oldest, so that every
        # replica picks the same one.
        current = min(active, key=lambda r: (r.created_at, r.kid))
        signer = Ed25519PrivateKey.from_private_bytes(
            kek.open(current.sealed_private_key, f"signing-key:{current.kid}")
        )
        verifiers = []
        for record in records:
            jwk = json.loads(record.public_jwk)
            public_key = OKPAlgorithm.from_jwk(json.dumps(jwk))
            assert isinstance(public_key, Ed25519PublicKey)
            verifiers.append(_Verifier(record.kid, jwk, public_key, record.publish_until))
        return cls(current.kid, signer, verifiers)

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWS compact serialization (RFC 7515 section 7.1) of the claims, signed with EdDSA.

        Built here rather than with `jwt.encode`, which encodes the constant header and checks
        the key again on every call (a quarter of the signing time, measured); verification,
        here and by every client, is pyjwt's or another library's (tests verify with both)."""
        signing_input = self._header_segment + b"." + _b64url(_compact_json(claims))
        return (signing_input + b"." + _b64url(self._signer.sign(signing_input))).decode("ascii")

    def jwks(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        return {
            "keys": [
                v.jwk
                for v in self._verifiers.values()
                if v.publish_until is None or v.publish_until > now
            ]
        }

    def verify(self, token: str, *, issuer: str, audience: str, now: datetime) -> dict[str, Any]:
        """Claims of a valid access token; raises jwt.InvalidTokenError otherwise."""
        kid = jwt.get_unverified_header(token).get("kid")
        verifier = self._verifiers.get(kid) if isinstance(kid, str) else None
        if verifier is None or (
            verifier.publish_until is not None and verifier.publish_until <= now
        ):
            # An InvalidTokenError, not jwt.InvalidKeyError (a PyJWTError only): a token signed
            # by a key this service does not publish is an invalid token, not a failure.
            raise jwt.InvalidSignatureError("unknown signing key")
        claims: dict[str, Any] = jwt.decode(
            token,
            verifier.public_key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            # Time is checked below against the clock passed in, not the wall clock.
            options={
                "require": ["exp", "iat", "sub", "ws", "tid", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int) or exp <= now.timestamp():
            raise jwt.ExpiredSignatureError("the access token has expired")
        # This service never issues a token from the future or for longer than the longest
        # lifetime it allows: one that says so was not made by it as it runs (a leaked key).
        if (
            not isinstance(iat, int)
            or iat > now.timestamp() + CLOCK_SKEW_SECONDS
            or exp - iat > MAX_ACCESS_TOKEN_TTL_SECONDS
            or claims.get("nbf", iat) > now.timestamp() + CLOCK_SKEW_SECONDS
        ):
            raise jwt.ImmatureSignatureError("the access token's times are not plausible")
        return claims


@dataclass(frozen=True)
class ServiceSecrets:
    digest_key: bytes
    rotation_key: bytes


async def _service_key(storage: Storage, kek: KeyEncryptionKey, name: str, now: datetime) -> bytes:
    sealed = await storage.get_service_key(name)
    if sealed is None:
        await storage.add_service_key(name, kek.seal(secrets.token_bytes(32), name), now)
        sealed = await storage.get_service_key(name)
        assert sealed is not None
    return kek.open(sealed, name)


async def load_service_secrets(
    storage: Storage, kek: KeyEncryptionKey, now: datetime
) -> ServiceSecrets:
    return ServiceSecrets(
        digest_key=await _service_key(storage, kek, DIGEST_KEY, now),
        rotation_key=await _service_key(storage, kek, ROTATION_KEY, now),
    )


async def add_first_signing_key(storage: Storage, kek: KeyEncryptionKey, now: datetime) -> None:
    """The key of a database that has none. Replicas starting together may each add one; all
    stay active and every replica signs with the oldest (KeyRing.from_records), so they agree
    (two keys made in the same millisecond are ordered by kid; a replica that loaded before the
    other key existed agrees at its next reload)."""
    first = new_signing_key(kek, now)
    await storage.add_signing_key(first, retire_others_at=None, publish_until=None)


async def load_key_ring(
    storage: Storage, kek: KeyEncryptionKey, now: datetime, signs_for: timedelta | None = None
) -> KeyRing:
    """The key ring; `signs_for` is the access-token lifetime of a serving replica, recorded
    with the key it signs with (so that a rotation knows how long that key's tokens live)."""
    records = await storage.signing_keys()
    if not records:
        await add_first_signing_key(storage, kek, now)
        records = await storage.signing_keys()
    ring = KeyRing.from_records(records, kek)
    if signs_for is not None:
        ttl = int(signs_for.total_seconds())
        signer = next(r for r in records if r.kid == ring.signer_kid)
        if signer.token_ttl_seconds is None or signer.token_ttl_seconds < ttl:
            await storage.record_token_ttl(signer.kid, ttl)
    return ring


async def rotate_signing_key(
    storage: Storage, kek: KeyEncryptionKey, now: datetime, access_token_ttl: timedelta
) -> str:
    """Start signing with a new key; the old ones stay published until their tokens expired:
    for the longest lifetime the serving replicas recorded with them, or, when none has (no
    replica served with them yet), `access_token_ttl`."""
    active = [r for r in await storage.signing_keys() if r.retired_at is None]
    recorded = [r.token_ttl_seconds for r in active if r.token_ttl_seconds is not None]
    lifetime = timedelta(seconds=max(recorded)) if recorded else access_token_ttl
    record = dataclasses.replace(
        new_signing_key(kek, now), token_ttl_seconds=int(lifetime.total_seconds())
    )
    # A minute of slack for clocks that disagree between replicas and resource servers.
    publish_until = now + lifetime + timedelta(seconds=60)
    await storage.add_signing_key(record, retire_others_at=now, publish_until=publish_until)
    return record.kid
