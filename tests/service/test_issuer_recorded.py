"""Issue 9 item 12: `init` records the issuer with the keys; `serve` uses it and refuses an
explicit issuer that differs (real processes, SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from apitoken_service.key_encryption import generate_key_file
from apitoken_service.settings import IssuerMismatch
from apitoken_service.startup import choose_issuer
from support.tokenservice import SERVICE_BIN, _stop, _wait_ready, free_loopback_port

pytestmark = pytest.mark.service


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("APITOKEN_SERVICE_")}


def test_serve_on_another_port_accepts_the_tokens_init_printed(tmp_path: Path) -> None:
    kek = tmp_path / "kek"
    generate_key_file(kek)
    common = ["--database", f"sqlite:///{tmp_path}/db.sqlite", "--kek-file", str(kek)]
    init = subprocess.run(
        [str(SERVICE_BIN), "init", *common, "--workspace", "acme", "--admin", "alice"],
        capture_output=True, text=True, env=_clean_env(), timeout=60, check=True,
    )  # fmt: skip
    access = json.loads(init.stdout)["accessToken"]
    port = free_loopback_port()
    serve = [str(SERVICE_BIN), "serve", *common, "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "serve.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base_url, process, log_path)
        listed = httpx.get(
            f"{base_url}/api/v1/workspaces/acme/tokens",
            headers={"authorization": f"Bearer {access}"},
        )
        assert listed.status_code == 200, listed.text
        metadata = httpx.get(f"{base_url}/.well-known/oauth-authorization-server").json()
        assert metadata["issuer"] == "http://127.0.0.1:8080"  # init's default, as recorded
    finally:
        _stop(process)
    refused = subprocess.run(
        [*serve, "--issuer", base_url], capture_output=True, text=True, env=_clean_env(), timeout=60
    )
    assert refused.returncode != 0
    assert "differs from the issuer recorded in the database, http://127.0.0.1:8080" in (
        refused.stderr
    )
    assert "Leave out --issuer" in refused.stderr


def test_choose_issuer() -> None:
    assert choose_issuer(None, None, "http://a") == "http://a"
    assert choose_issuer(None, "http://b", "http://a") == "http://b"
    assert choose_issuer("http://r", None, "http://a") == "http://r"
    assert choose_issuer("http://r", "http://r", "http://a") == "http://r"
    with pytest.raises(IssuerMismatch):
        choose_issuer("http://r", "http://b", "http://a")
