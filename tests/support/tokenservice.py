"""The real token service for tests: a typed API client, and `apitoken-service serve` as a
subprocess on a free loopback port (for the service tests that cross a real socket and for the
operator's end-to-end tests).

    with start_token_service(tmp_path, access_token_ttl=30) as svc:
        svc.base_url, svc.workspace, svc.admin, svc.credential["refreshToken"], svc.log_path

or the `token_service` fixture (access tokens live 60 s). Teardown stops exactly the process it
started (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from apitoken_service.key_encryption import generate_key_file

__all__ = [
    "ApiSession",
    "RunningTokenService",
    "free_loopback_port",
    "start_token_service",
    "token_service",
]

SERVICE_BIN = Path(sys.executable).with_name("apitoken-service")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ApiSession:
    """A member's view of the management API over any httpx client (in-process or real)."""

    http: httpx.AsyncClient
    workspace: str
    user: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def path(self, rest: str = "") -> str:
        return f"/api/v1/workspaces/{self.workspace}{rest}"

    async def create_token(
        self, name: str = "ci", lifetime_days: int = 30, external_ref: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "lifetimeDays": lifetime_days}
        if external_ref is not None:
            body["externalRef"] = external_ref
        response = await self.http.post(self.path("/tokens"), json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def add_member(self, user: str, role: str = "member") -> ApiSession:
        response = await self.http.post(
            self.path("/members"), json={"user": user, "role": role}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return ApiSession(
            self.http, self.workspace, user, body["accessToken"], body["refreshToken"]
        )

    async def renew(self) -> None:
        """Refresh this session's own credential (rotation gives a new refresh token)."""
        response = await self.refresh(self.refresh_token)
        assert response.status_code == 200, response.text
        self.access_token = response.json()["access_token"]
        self.refresh_token = response.json()["refresh_token"]

    async def refresh(self, refresh_token: str, **extra: str) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        return await self.http.post("/oauth2/token", data=form)


@dataclass
class RunningTokenService:
    base_url: str
    workspace: str
    admin: str
    # {"accessToken", "refreshToken"} printed by `init`, once; kept out of reprs, which pytest
    # prints for fixture values when a test fails.
    credential: dict[str, str] = field(repr=False)
    database_url: str
    database_path: Path
    kek_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    init_output: dict[str, str] = field(default_factory=dict, repr=False)
    serve_argv: list[str] = field(default_factory=list, repr=False)
    serve_env: dict[str, str] = field(default_factory=dict, repr=False)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """A real outage: the server stops (connections are refused), then starts again on the
        same port and database. Unlike SIGSTOP, no request is queued to run after the outage."""
        _stop(self.process)
        try:
            yield
        finally:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.serve_argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.serve_env,
                )
            _wait_ready(self.base_url, self.process, self.log_path)

    def replays(self) -> float:
        """The service's count of rotated refresh tokens presented again (zero: no replay)."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        found = re.search(r"^apitoken_service_refresh_replays_total (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run another `apitoken-service` command against the same database."""
        return subprocess.run(
            [
                str(SERVICE_BIN),
                *args,
                "--database",
                self.database_url,
                "--kek-file",
                str(self.kek_path),
            ],
            capture_output=True,
            text=True,
            input=stdin if stdin is not None else "",
            timeout=60,
            check=False,
            env=_env(self.base_url),
        )


def _env(issuer: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APITOKEN_SERVICE_")}
    env["APITOKEN_SERVICE_ISSUER"] = issuer
    env.update(extra or {})
    return env


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"apitoken-service exited early:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"apitoken-service not ready after {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def start_token_service(
    directory: Path,
    *,
    access_token_ttl: int = 60,
    workspace: str = "acme",
    admin: str = "admin",
    rotation_grace: int = 30,
    rate_limit: float = 0,
    extra_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[RunningTokenService]:
    """`apitoken-service serve` on a free loopback port with a temporary SQLite database,
    then `init`; stops exactly that process afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    database_path = directory / "tokenservice.db"
    database_url = f"sqlite:///{database_path}"
    kek_path = directory / "tokenservice.kek"
    log_path = directory / "tokenservice.log"
    port = free_loopback_port()
    base_url = f"http://127.0.0.1:{port}"
    common = ["--database", database_url, "--kek-file", str(kek_path)]
    generate_key_file(kek_path)
    init_command = [
        str(SERVICE_BIN),
        "init",
        *common,
        "--workspace",
        workspace,
        "--admin",
        admin,
        "--access-token-ttl",
        str(access_token_ttl),
    ]
    serve_argv = [
        str(SERVICE_BIN),
        "serve",
        *common,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--access-token-ttl",
        str(access_token_ttl),
        "--rotation-grace",
        str(rotation_grace),
        "--rate-limit",
        str(rate_limit),
        *extra_args,
    ]
    serve_env = _env(base_url, env)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            serve_argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=serve_env,
        )
    running: RunningTokenService | None = None
    try:
        # `init` runs while the server starts: both migrate under the database's write lock.
        init = subprocess.Popen(
            init_command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(base_url),
        )
        init_out, init_err = init.communicate(timeout=START_TIMEOUT_S)
        if init.returncode != 0:
            raise RuntimeError(f"apitoken-service init failed:\n{init_err[-3000:]}")
        _wait_ready(base_url, process, log_path)
        with log_path.open("a") as log_text:
            log_text.write(init_err)  # init's own log lines, for the same scans
        output: dict[str, str] = json.loads(init_out)
        running = RunningTokenService(
            base_url=base_url,
            workspace=workspace,
            admin=admin,
            credential={k: output[k] for k in ("accessToken", "refreshToken")},
            database_url=database_url,
            database_path=database_path,
            kek_path=kek_path,
            log_path=log_path,
            process=process,
            init_output=output,
            serve_argv=serve_argv,
            serve_env=serve_env,
        )
        yield running
    finally:
        # After a `down()` the process running is a newer one.
        _stop(running.process if running is not None else process)


@pytest.fixture
def token_service(tmp_path: Path) -> Iterator[RunningTokenService]:
    """A real token service (SQLite, access tokens of 60 s) with workspace `acme`, admin `admin`."""
    with start_token_service(tmp_path / "tokenservice") as running:
        yield running
