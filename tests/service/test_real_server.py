"""`apitoken-service` as real processes: init, serve over a socket, key rotation, log and
database scans, and a schemathesis run over the served OpenAPI."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from support.tokenservice import SERVICE_BIN, RunningTokenService, start_token_service

pytestmark = pytest.mark.service


def lifecycle(svc: RunningTokenService) -> list[str]:
    """Every kind of call a user makes; returns every token value the service handed out."""
    values = [svc.credential["accessToken"], svc.credential["refreshToken"]]
    api = f"{svc.base_url}/api/v1/workspaces/{svc.workspace}"
    with httpx.Client(base_url=svc.base_url, timeout=10) as http:
        admin = {"Authorization": f"Bearer {svc.credential['accessToken']}"}
        created = http.post(f"{api}/tokens", json={"name": "ci", "lifetimeDays": 7}, headers=admin)
        assert created.status_code == 201, created.text
        token = created.json()
        values += [token["accessToken"], token["refreshToken"]]
        first = http.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": token["refreshToken"]},
        )
        assert first.status_code == 200
        values += [first.json()["access_token"], first.json()["refresh_token"]]
        retry = http.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": token["refreshToken"]},
        )
        assert retry.json()["refresh_token"] == first.json()["refresh_token"]
        values.append(retry.json()["access_token"])
        member = http.post(f"{api}/members", json={"user": "bob"}, headers=admin)
        values += [member.json()["accessToken"], member.json()["refreshToken"]]
        http.post(
            "/oauth2/introspect", data={"token": first.json()["refresh_token"]}, headers=admin
        )
        # Values in places they do not belong must not be echoed into logs either.
        http.get(
            f"/api/v1/workspaces/{svc.workspace}/tokens/{token['refreshToken']}", headers=admin
        )
        http.post(
            f"{api}/tokens",
            json={"name": token["refreshToken"] * 9, "lifetimeDays": 1},
            headers=admin,
        )
        http.post(
            "/oauth2/token", data={"grant_type": "password", "password": token["refreshToken"]}
        )
        http.get(f"{api}/tokens", headers={"Authorization": f"Bearer {token['refreshToken']}"})
        http.post("/oauth2/revoke", data={"token": member.json()["refreshToken"]})
        http.post(f"{api}/tokens/{token['id']}/disable", headers=admin)
        http.delete(f"{api}/tokens/{token['id']}", headers=admin)
        assert http.get("/metrics").status_code == 200
    return values


def secret_parts(values: list[str]) -> list[str]:
    """The values and, for refresh tokens, their random part alone."""
    return values + [v.removeprefix("apit_rt_") for v in values if v.startswith("apit_rt_")]


def test_init_prints_one_credential_and_it_works(token_service: RunningTokenService) -> None:
    assert set(token_service.init_output) == {"workspace", "user", "accessToken", "refreshToken"}
    assert token_service.init_output["workspace"] == "acme"
    assert token_service.init_output["user"] == "admin"
    listed = httpx.get(
        f"{token_service.base_url}/api/v1/workspaces/acme/tokens",
        headers={"Authorization": f"Bearer {token_service.credential['accessToken']}"},
    )
    assert listed.status_code == 200 and listed.json()["items"][0]["owner"] == "admin"
    refreshed = httpx.post(
        f"{token_service.base_url}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token_service.credential["refreshToken"],
        },
    )
    assert refreshed.status_code == 200 and refreshed.json()["expires_in"] == 60


def test_no_token_value_in_logs_or_database_files(token_service: RunningTokenService) -> None:
    values = secret_parts(lifecycle(token_service))
    time.sleep(0.2)  # let the access log flush
    log = token_service.log_path.read_text()
    assert '"route": "/oauth2/token"' in log and "token created" in log  # the capture worked
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # structured: every log line of ours is one JSON object
    database_bytes = b"".join(
        path.read_bytes()
        for path in token_service.database_path.parent.glob(token_service.database_path.name + "*")
    )
    with sqlite3.connect(token_service.database_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = [repr(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]
    assert "tokens" in tables and len(cells) > 5
    rows = "\n".join(cells)
    for value in values:
        assert value not in log
        assert value.encode() not in database_bytes
        assert value not in rows


def test_rotated_signing_key_reaches_the_running_server(tmp_path: Path) -> None:
    with start_token_service(tmp_path, env={"APITOKEN_SERVICE_KEY_RELOAD_SECONDS": "0.2"}) as svc:
        before = httpx.get(f"{svc.base_url}/.well-known/jwks.json").json()["keys"]
        rotated = svc.cli("rotate-signing-key")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = json.loads(rotated.stdout)["kid"]
        deadline = time.monotonic() + 10
        kids: list[str] = []
        while time.monotonic() < deadline and new_kid not in kids:
            time.sleep(0.2)
            kids = [
                k["kid"] for k in httpx.get(f"{svc.base_url}/.well-known/jwks.json").json()["keys"]
            ]
        assert kids == [before[0]["kid"], new_kid]
        token = httpx.post(
            f"{svc.base_url}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": svc.credential["refreshToken"]},
        ).json()["access_token"]
        header = json.loads(_b64(token.split(".")[0]))
        assert header["kid"] == new_kid and header["alg"] == "EdDSA"


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_default_key_encryption_key_is_created_beside_sqlite_0600(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(SERVICE_BIN),
            "init",
            "--workspace",
            "w",
            "--admin",
            "a",
            "--database",
            f"sqlite:///{tmp_path}/x.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kek = tmp_path / "x.db.kek"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert json.loads(result.stdout)["refreshToken"] not in result.stderr


def test_postgresql_without_a_key_encryption_key_is_refused(postgres_database_url: str) -> None:
    result = subprocess.run(
        [str(SERVICE_BIN), "migrate", "--database", postgres_database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "key-encryption key" in result.stderr


def test_schemathesis_finds_no_server_error(token_service: RunningTokenService) -> None:
    schema = schemathesis.openapi.from_url(f"{token_service.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token_service.credential['accessToken']}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations += 1
        path_parameters: dict[str, Any] = (
            {"workspace": token_service.workspace} if "{workspace}" in operation.path else {}
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @hypothesis.given(case=strategy)
            @hypothesis.settings(
                max_examples=15,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=token_service.base_url, headers=headers, timeout=10)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                # No invalid input exists for an operation without parameters or body.
                assert mode is GenerationMode.NEGATIVE
    assert operations >= 15
    assert failures == []
    assert "unhandled error" not in token_service.log_path.read_text()
