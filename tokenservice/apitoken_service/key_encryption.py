"""The key-encryption key (KEK) that seals signing and rotation keys stored in the database.

A stolen database alone forges nothing: every secret in it is AES-256-GCM sealed under the KEK,
which lives in a file (0600) or an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_BYTES = 32
_NONCE_BYTES = 12


class KeyEncryptionError(RuntimeError):
    pass


class KeyEncryptionKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise KeyEncryptionError("the key-encryption key must be 32 bytes (base64-encoded)")
        self._aead = AESGCM(key)

    @classmethod
    def from_base64(cls, text: str) -> KeyEncryptionKey:
        try:
            raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        except (binascii.Error, ValueError):
            raise KeyEncryptionError("the key-encryption key is not valid base64") from None
        return cls(raw)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context.encode()
            )
        except InvalidTag:
            raise KeyEncryptionError(
                "cannot decrypt the stored keys: the key-encryption key does not belong to "
                "this database"
            ) from None


def generate_key_file(path: Path) -> None:
    """Create a new KEK file readable by its owner only; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(encoded + b"\n")


def load_key_file(path: Path) -> KeyEncryptionKey:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyEncryptionError(
            f"cannot read key-encryption key file {path}: {exc.strerror}"
        ) from None
    return KeyEncryptionKey.from_base64(text)
