"""What the numbers were measured on: hardware, load, and the versions that matter."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "pyjwt",
    "cryptography",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat): what all the
    processes of a phase (apiserver, etcd, token service, operator, the bench) cost together."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# Which process of a phase is which, from a word of its command line (first match wins: the
# cached binaries' paths contain apitoken-operator too).
ROLES = (
    ("kube-apiserver", "apiserver"),
    ("bin/etcd", "etcd"),
    ("kube-controller-manager", "controller-manager"),
    ("apitoken-service", "token service"),
    ("apitoken-operator", "operator"),
    ("bench.", "bench"),
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of the live processes of each role in `ROLES` (the rest of the machine
    is `machine_busy_seconds` minus their sum): a phase's difference says who did its work."""
    ticks: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        role = next((r for word, r in ROLES if word in command), None)
        if role is not None:
            ticks[role] = ticks.get(role, 0) + int(fields[11]) + int(fields[12])
    return {role: t / os.sysconf("SC_CLK_TCK") for role, t in ticks.items()}


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: round(after[role] - before.get(role, 0.0), 1) for role in after}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe() -> dict[str, str]:
    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load average at start (1/5/15 min)": load_average(),
        "token service measured": service_source(),
    }


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and its live descendants (Linux /proc).

    Descendants count because `serve --workers N` answers requests in child processes.
    """
    total_ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        total_ticks += int(fields[11]) + int(fields[12])  # utime, stime: stat(5) fields 14, 15
        pending.extend(_children(current))
    return total_ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread alone: where its event loop runs."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_source() -> str:
    """Which apitoken_service the service subprocess imports, and its git revision."""
    found = subprocess.run(
        [sys.executable, "-c", "import apitoken_service; print(apitoken_service.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        return "apitoken_service not importable"
    package = Path(found.stdout.strip()).parent
    revision = _git(package, "rev-parse", "--short", "HEAD")
    top = _git(package, "rev-parse", "--show-toplevel")
    if revision is None or top is None:
        return f"{package} (not a git checkout)"
    dirty = _git(package, "status", "--porcelain", "--", ".")
    state = "with uncommitted changes" if dirty else "clean"
    return f"{package.relative_to(top)} at commit {revision}, {state}"


def _git(where: Path, *args: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None
