"""`apitoken-service` for `make dev`: serve on a free loopback port, `init` workspaces on demand.

The credential `init` prints is parsed in memory and handed on; it is never printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from localkube.controlplane import free_port, wait_until
from localkube.processes import Process

SERVICE_BIN = Path(sys.executable).with_name("apitoken-service")


@dataclass(frozen=True)
class WorkspaceCredential:
    """A workspace at the token service and the bootstrap refresh token of its admin."""

    workspace: str
    refresh_token: str = field(repr=False)  # kept out of reprs, tracebacks and logs


@dataclass
class TokenService:
    url: str
    process: Process
    _common: list[str]
    _env: dict[str, str]
    _log: Path

    def init(self, workspace: str, admin: str) -> WorkspaceCredential:
        """Create `workspace` with `admin` and return the admin's bootstrap credential."""
        argv = [str(SERVICE_BIN), "init", *self._common, "--workspace", workspace]
        with self._log.open("a") as log:
            # stdout holds the credential: captured, never shown. stderr is init's log.
            done = subprocess.run(
                [*argv, "--admin", admin],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self._env,
                timeout=60,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"apitoken-service init failed ({done.returncode}), see {self._log}")
        printed = json.loads(done.stdout)
        return WorkspaceCredential(workspace=workspace, refresh_token=printed["refreshToken"])

    def set_password(self, workspace: str, user: str, password_file: Path) -> None:
        """Give `user` a random password for the pages, kept only in `password_file` (0600)."""
        password = secrets.token_urlsafe(18)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        argv = [str(SERVICE_BIN), "set-password", *self._common]
        with self._log.open("a") as log:
            done = subprocess.run(
                [*argv, "--workspace", workspace, "--user", user],
                input=password,
                stdout=log,
                stderr=log,
                text=True,
                env=self._env,
                timeout=60,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"apitoken-service set-password failed, see {self._log}")


def _environment() -> dict[str, str]:
    # The command line decides; stray APITOKEN_SERVICE_* variables of the shell must not.
    return {k: v for k, v in os.environ.items() if not k.startswith("APITOKEN_SERVICE_")}


@contextlib.contextmanager
def run_token_service(
    state_dir: Path,
    log_dir: Path,
    *,
    access_token_ttl: int,
    log: Callable[[str], None] = lambda _msg: None,
) -> Iterator[TokenService]:
    """SQLite and key-encryption key in `state_dir` (removed on exit), log in `log_dir`."""
    # What a killed run left behind is thrown away like a clean run's state: its key file
    # would make generate-kek refuse, and its database belongs to a control plane that is gone.
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        kek = state_dir / "tokenservice.kek"
        # serve and every init must share the database, the key and the issuer.
        common = [
            f"--database=sqlite:///{state_dir / 'tokenservice.db'}",
            f"--kek-file={kek}",
            f"--issuer={url}",
        ]
        env = _environment()
        # Made before serve starts, so that serve and init never race to create it.
        subprocess.run([str(SERVICE_BIN), "generate-kek", "--out", str(kek)], check=True, env=env)
        log_path = log_dir / "tokenservice.log"
        argv = [str(SERVICE_BIN), "serve", *common, "--host=127.0.0.1", f"--port={port}"]
        process = Process(
            "apitoken-service", [*argv, f"--access-token-ttl={access_token_ttl}"], log_path, env
        )
        try:
            log(f"started apitoken-service (pid {process.pid}), log {log_path}")
            wait_until(
                "apitoken-service",
                lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
                60,
                [process],
            )
            yield TokenService(url, process, common, env, log_path)
        finally:
            process.stop()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
