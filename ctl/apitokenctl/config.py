"""The signed-in credential: a 0600 JSON file under $XDG_CONFIG_HOME/apitokenctl/ (or where
APITOKENCTL_CONFIG points). The refresh token in it rotates on every command."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Credential:
    url: str
    workspace: str
    refresh_token: str


def config_path() -> Path:
    explicit = os.environ.get("APITOKENCTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "apitokenctl" / "credential.json"


def load() -> Credential | None:
    try:
        data = json.loads(config_path().read_text())
        return Credential(data["url"], data["workspace"], data["refresh_token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(credential: Credential) -> None:
    """Write atomically, readable by the owner only (created 0600, never widened)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(asdict(credential), handle)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
