"""The real token service as a subprocess on loopback, and the API calls that seed it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ports import free_loopback_port

HOST = "127.0.0.1"
WORKSPACE = "bench"
ADMIN = "bench-admin"
START_TIMEOUT_S = 60.0


def service_environment(issuer: str) -> dict[str, str]:
    """Settings for a benchmark run: the defaults, except no per-address rate limit.

    Every virtual client comes from 127.0.0.1, so the token endpoint's per-address limit would
    measure the limiter instead of the service.
    """
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        **os.environ,
        "APITOKEN_SERVICE_TOKEN_RATE_LIMIT_PER_SECOND": "0",
        "APITOKEN_SERVICE_KEY_ENCRYPTION_KEY": kek,
        "APITOKEN_SERVICE_ISSUER": issuer,
    }


def _service_command() -> list[str]:
    return [str(Path(sys.executable).with_name("apitoken-service"))]


def init_workspace(database_url: str, env: Mapping[str, str]) -> str:
    """Create the benchmark workspace and its admin; returns the admin's access token."""
    result = subprocess.run(
        [
            *_service_command(),
            "init",
            "--workspace",
            WORKSPACE,
            "--admin",
            ADMIN,
            "--database",
            database_url,
        ],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"apitoken-service init failed: {result.stderr.strip()[-2000:]}")
    created = json.loads(result.stdout)
    access_token: str = created["accessToken"]
    return access_token


@dataclass(frozen=True)
class RunningService:
    port: int
    pid: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def running_service(
    database_url: str,
    env: Mapping[str, str],
    port: int,
    log_path: Path,
    workers: int = 1,
    profile_to: Path | None = None,
) -> Iterator[RunningService]:
    """`apitoken-service serve` on 127.0.0.1:port until the block ends (SIGINT, then kill)."""
    command = [
        *_service_command(),
        "serve",
        "--database",
        database_url,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if profile_to is not None:
        command = [sys.executable, "-m", "bench.profiled_service", str(profile_to), *command[1:]]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(process, f"http://{HOST}:{port}/healthz", log_path)
        yield RunningService(port=port, pid=process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"the service was not healthy after {START_TIMEOUT_S}s:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def create_refresh_tokens(base_url: str, access_token: str, count: int, prefix: str) -> list[str]:
    """`count` API tokens of the admin, created through the management API; their refresh tokens.

    Each virtual client of the load generator chains one of them, so none share a token.
    """
    tokens: list[str] = []
    headers = {"Authorization": f"Bearer {access_token}"}
    url = f"{base_url}/api/v1/workspaces/{WORKSPACE}/tokens"
    with httpx.Client(timeout=30.0, headers=headers) as client:
        for index in range(count):
            response = client.post(url, json={"name": f"{prefix}-{index}", "lifetimeDays": 30})
            if response.status_code != 201 and response.status_code != 200:
                raise RuntimeError(
                    f"creating a token answered {response.status_code}: {response.text[:300]}"
                )
            tokens.append(response.json()["refreshToken"])
    return tokens


def new_port() -> int:
    return free_loopback_port()
