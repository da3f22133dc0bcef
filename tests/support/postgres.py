"""A real PostgreSQL server on loopback for the service tests.

One server per test session: `initdb` into a temporary folder, `postgres` on a free 127.0.0.1
port with durability switched off (tests never need crash safety), stopped and removed at the
end. Each test that asks for `postgres_database_url` gets a fresh, empty database of its own,
dropped afterwards. The server dies with the test process even when that is killed
(postgres_watchdog.py), so an interrupted run leaves no server behind. The binaries come from
Debian's packages (`make postgres`); a missing binary fails the session instead of skipping, so
a green run always covered PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest

__all__ = [
    "PostgresServer",
    "find_postgres_bin",
    "postgres_database_url",
    "postgres_new_database",
    "postgres_server",
]

SUPERUSER = "postgres"
# initdb refuses to run as root; the Debian package creates this account for the server.
OS_USER_WHEN_ROOT = "postgres"
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
WATCHDOG = Path(__file__).with_name("postgres_watchdog.py")

_database_numbers = count(1)


def find_postgres_bin() -> Path:
    """The newest Debian PostgreSQL bin folder holding initdb, postgres and psql."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    for bin_dir in reversed(candidates):
        if all((bin_dir / tool).exists() for tool in ("initdb", "postgres", "psql")):
            return bin_dir
    pytest.fail(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
        "run `make postgres` to install them from Debian's packages",
        pytrace=False,
    )


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class _RunAs:
    """Whose identity the server commands run under (the postgres account when we are root)."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        try:
            account = pwd.getpwnam(OS_USER_WHEN_ROOT)
        except KeyError:
            pytest.fail(
                f"running as root but the OS user {OS_USER_WHEN_ROOT!r} is missing: "
                "run `make postgres` (Debian's package creates it)",
                pytrace=False,
            )
        return cls(uid=account.pw_uid, gid=account.pw_gid)

    @property
    def extra_groups(self) -> list[int] | None:
        # Drop root's supplementary groups too; None leaves them alone when we are not root.
        return None if self.uid is None else []

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


@dataclass
class PostgresServer:
    """A running throwaway server; create and drop databases on it."""

    bin_dir: Path
    root: Path
    port: int
    host: str = "127.0.0.1"
    run_as: _RunAs = field(default_factory=_RunAs)
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over TCP and return psql's unaligned output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--host={self.host}",
                f"--port={self.port}",
                f"--username={SUPERUSER}",
                f"--dbname={database}",
                f"--command={sql}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        _check_identifier(name)
        self.psql(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _check_identifier(name)
        # FORCE ends connections a test's pool may still hold open.
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_exists(self, name: str) -> bool:
        _check_identifier(name)
        return self.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"

    @contextlib.contextmanager
    def database(self, hint: str = "db") -> Iterator[str]:
        """A fresh, empty database for the duration of the block; yields its URL."""
        name = unique_database_name(hint)
        url = self.create_database(name)
        try:
            yield url
        finally:
            self.drop_database(name)

    # -- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        self.run_as.chown(self.root)
        self.socket_dir.mkdir()
        self.run_as.chown(self.socket_dir)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.root,
            capture_output=True,
            check=True,
            timeout=120,
            user=self.run_as.uid,
            group=self.run_as.gid,
            extra_groups=self.run_as.extra_groups,
        )

    def start(self) -> None:
        settings = [f"--{key}={value}" for key, value in TEST_SETTINGS.items()]
        log = self.log_file.open("ab")
        as_user = [] if self.run_as.uid is None else [f"--uid={self.run_as.uid}"]
        as_group = [] if self.run_as.gid is None else [f"--gid={self.run_as.gid}"]
        try:
            # postgres runs under a watchdog that stops it when this process dies
            # (postgres_watchdog.py; PR_SET_PDEATHSIG does not survive the change of user).
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",  # the standard library only: this folder's operator.py would shadow it
                    str(WATCHDOG),
                    *as_user,
                    *as_group,
                    f"--remove={self.root}",
                    "--",
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    f"--listen_addresses={self.host}",
                    f"--port={self.port}",
                    f"--unix_socket_directories={self.socket_dir}",
                    *settings,
                ],
                cwd=self.root,
                # The pipe's write end stays in this process only (not inheritable): its end
                # of file is the watchdog's signal that this process is gone.
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}:\n{self._log_tail()}"
                )
            ready = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    f"--host={self.host}",
                    f"--port={self.port}",
                    f"--username={SUPERUSER}",
                    "--dbname=postgres",
                    "--timeout=1",
                ],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready after {START_TIMEOUT_S}s:\n{self._log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # The watchdog sends SIGINT, PostgreSQL's "fast" shutdown (roll back clients, then
        # exit cleanly), and SIGKILL if that takes too long; it exits once postgres is gone.
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(b"stop")
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain lowercase PostgreSQL identifier: {name!r}")


def unique_database_name(hint: str) -> str:
    """A readable, unique, valid database name from a hint such as the test's name."""
    stem = re.sub(r"[^a-z0-9_]+", "_", hint.lower()).strip("_")[:40] or "db"
    return f"t{next(_database_numbers)}_{os.getpid()}_{stem}"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Init, start, yield, then stop exactly this server and remove its folder."""
    bin_dir = find_postgres_bin()
    run_as = _RunAs.for_current_process()
    # Not under pytest's tmp_path: that lives in a root-only folder the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="apitoken-pg-"))
    server: PostgresServer | None = None
    try:
        for attempt in range(3):
            server = PostgresServer(
                bin_dir=bin_dir, root=root, port=_free_loopback_port(), run_as=run_as
            )
            if attempt == 0:
                server.init()
            try:
                server.start()
                break
            except RuntimeError:
                # Another process may have taken the free port between the probe and the bind.
                server.stop()
                if attempt == 2:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, on 127.0.0.1 and a private socket dir."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_database_url(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:PORT/<unique>`: a fresh empty database, dropped after."""
    with postgres_server.database(request.node.name) as url:
        yield url


@pytest.fixture
def postgres_new_database(
    postgres_server: PostgresServer,
) -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """More databases for one test: `with postgres_new_database("hint") as url: ...`."""
    return postgres_server.database
