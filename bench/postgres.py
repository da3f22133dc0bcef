"""A throwaway PostgreSQL server on loopback for one benchmark run.

The same recipe as the test harness (tests/support/postgres.py), without pytest: Debian's
binaries, `initdb` into a temporary folder as the `postgres` account when we are root, a free
127.0.0.1 port, stopped and removed at the end. Durability stays at PostgreSQL's defaults here
(fsync on), unlike the tests, so the numbers mean something for a real deployment.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.ports import free_loopback_port

SUPERUSER = "postgres"


class PostgresMissing(RuntimeError):
    pass


def find_postgres_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    for bin_dir in reversed(candidates):
        if all((bin_dir / tool).exists() for tool in ("initdb", "postgres", "pg_isready")):
            return bin_dir
    raise PostgresMissing("PostgreSQL binaries not found: run `make postgres`")


@dataclass(frozen=True)
class RunningPostgres:
    bin_dir: Path
    port: int
    version: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def running_postgres() -> Iterator[RunningPostgres]:
    bin_dir = find_postgres_bin()
    ids: dict[str, int] = {}
    if os.geteuid() == 0:
        # initdb refuses root; Debian's package created this account for the server.
        account = pwd.getpwnam("postgres")
        ids = {"user": account.pw_uid, "group": account.pw_gid}
    extra_groups: list[int] | None = [] if ids else None
    root = Path(tempfile.mkdtemp(prefix="apitoken-bench-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        sockets = root / "socket"
        sockets.mkdir()
        if ids:
            os.chown(root, ids["user"], ids["group"])
            os.chown(sockets, ids["user"], ids["group"])
        data = root / "data"
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=120,
            user=ids.get("user"),
            group=ids.get("group"),
            extra_groups=extra_groups,
        )
        port = free_loopback_port()
        with (root / "postgres.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "--listen_addresses=127.0.0.1",
                    f"--port={port}",
                    f"--unix_socket_directories={sockets}",
                    "--max_connections=200",
                ],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=ids.get("user"),
                group=ids.get("group"),
                extra_groups=extra_groups,
            )
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (root / "postgres.log").read_text(errors="replace")
                raise RuntimeError(f"postgres did not start:\n{log_text[-2000:]}")
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.05)
        version = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        yield RunningPostgres(bin_dir=bin_dir, port=port, version=version)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
