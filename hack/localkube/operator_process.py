"""`apitoken-operator run` as a child process of `make dev`, and its log in the foreground."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from localkube.processes import Process

OPERATOR_BIN = Path(sys.executable).with_name("apitoken-operator")


def start_operator(
    kubeconfig: Path, log_path: Path, settings: Mapping[str, str], args: tuple[str, ...] = ()
) -> Process:
    """Start the operator against `kubeconfig` with APITOKEN_OPERATOR_* `settings`."""
    # Only the settings given here apply, not stray ones from the shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APITOKEN_OPERATOR_")}
    env.update(settings, KUBECONFIG=str(kubeconfig))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return Process("apitoken-operator", [str(OPERATOR_BIN), "run", *args], log_path, env)


def follow(process: Process, until: float | None) -> int | None:
    """Copy the process's log to stdout as it grows (the operator "in the foreground") until it
    exits (its exit code) or the monotonic time `until` passes (None)."""
    with process.log_path.open("rb") as log:
        while True:
            # Read the exit code first: the log is complete once the process has exited.
            code = process.popen.poll()
            chunk = log.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if code is not None:
                return code
            if until is not None and time.monotonic() >= until:
                return None
            time.sleep(0.2)
