"""The node's clean-up before a start kills a dnsmasq that a killed harness left behind.

dnsmasq switches to group dip, which clears the PDEATHSIG the harness sets on its children, so
a SIGKILLed test run leaves it bound to the bridge address, answering the next node's Service
names from old files. `localkube.node._kill_pods` (called by `clean_host` before every start)
matches it by its `DNS_LISTEN` argument. This starts one dnsmasq the way the node does (with
DNS disabled, `--port=0`, so it binds nothing and needs no bridge) and one that listens
elsewhere, runs the clean-up under the node's machine lock (it also kills Pods and shims, so no
node may run meanwhile), and checks that only the node's one was killed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from localkube.node import DNS_LISTEN, _kill_pods, _machine_lock

pytestmark = pytest.mark.node


def start_dnsmasq(folder: Path, listen: str) -> subprocess.Popen[bytes]:
    folder.mkdir()
    (folder / "hosts").mkdir()
    process = subprocess.Popen(
        [
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--hostsdir={folder / 'hosts'}",
            listen,
            "--port=0",  # DNS disabled: no socket, so nothing collides with a real node's
            "--except-interface=lo",
            f"--pid-file={folder / 'dnsmasq.pid'}",
            "--user=root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (folder / "dnsmasq.pid").exists():
        assert process.poll() is None, f"dnsmasq exited with {process.returncode}"
        assert time.monotonic() < deadline, "dnsmasq did not start"
        time.sleep(0.05)
    return process


def test_a_start_kills_the_dnsmasq_a_killed_harness_left(tmp_path: Path) -> None:
    stale = start_dnsmasq(tmp_path / "stale", DNS_LISTEN)
    other = start_dnsmasq(tmp_path / "other", "--listen-address=127.0.0.2")
    try:
        with _machine_lock():
            _kill_pods()
        assert stale.wait(timeout=10) == -signal.SIGKILL
        time.sleep(0.5)
        assert other.poll() is None, "a dnsmasq that is not the node's was killed"
    finally:
        for process in (stale, other):
            if process.poll() is None:
                process.kill()
                process.wait()
