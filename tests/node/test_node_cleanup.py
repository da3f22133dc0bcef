"""The node's clean-up before a start kills a dnsmasq that a killed harness left behind.

dnsmasq switches to group dip, which clears the PDEATHSIG the harness sets on its children, so
a SIGKILLed test run leaves it bound to the bridge address, answering the next node's Service
names from old files. `localkube.node._kill_pods` (called by `clean_host` before every start)
SIGKILLs what `_leftover_processes` finds, which matches it by its `DNS_LISTEN` argument. This
starts one dnsmasq the way the node does (with DNS disabled, `--port=0`, so it binds nothing and
needs no bridge) and one that listens elsewhere, and checks that only the node's one is found.
It does not run the clean-up itself: that kills every Pod and shim on the machine, and the
session's node may be running beside this test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from localkube.node import DNS_LISTEN, _leftover_processes

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


def test_a_start_finds_the_dnsmasq_a_killed_harness_left(tmp_path: Path) -> None:
    stale = start_dnsmasq(tmp_path / "stale", DNS_LISTEN)
    other = start_dnsmasq(tmp_path / "other", "--listen-address=127.0.0.2")
    try:
        found = _leftover_processes()
        assert stale.pid in found, "the node's dnsmasq left by a killed harness was not found"
        assert other.pid not in found, "a dnsmasq that is not the node's would be killed"
    finally:
        for process in (stale, other):
            if process.poll() is None:
                process.kill()
                process.wait()
