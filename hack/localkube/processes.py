"""Child processes that die with their parent and are stopped exactly."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: if the harness is killed outright (SIGKILL, OOM), the kernel kills its children
    # too, so no etcd or kube-apiserver outlives a crashed test run. SIGKILL, not SIGTERM: a
    # kube-apiserver told to terminate after etcd is gone waits in graceful termination for
    # ever (seen). A clean stop still goes through stop() and SIGTERM, in order.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One started binary with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv0 = str(argv[0])
        self.log_path = log_path
        self._argv = list(argv)
        self._env = None if env is None else dict(env)
        self._log: IO[bytes] = log_path.open("wb")
        self.popen = self._popen()

    def _popen(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the harness, which stops children in order
        )

    def start_again(self) -> None:
        """Start the stopped process again with the same command line (same data directory,
        ports, certificates), appending to its log; chaos tests restart etcd and the apiserver."""
        assert self.popen.poll() is not None, f"{self.name} is still running"
        self._log = self.log_path.open("ab")
        self.popen = self._popen()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
