"""The bench's observers of the steady state, kept light so they do not take the operator's CPU:
one watch of the managed Secrets feeding a `SecretTracker` (each Secret carries the time the
operator obtained its access token, `apitoken.dev/refreshed-at`), a once-a-second expiry check
over what the watch already holds (no reads), and a sampler of the operator's CPU every 10 s.
Token values are decoded in memory for their `iat` and never printed."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from lightkube import Client
from lightkube.resources.core_v1 import Secret
from lightkube.types import OnErrorAction, OnErrorResult

from apitoken_operator.crd import names
from apitoken_operator.providers.answers import parse_rfc3339
from bench.refresh_tracker import SecretTracker, unverified_claims


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


class SecretWatch:
    """Watches the Secrets named `prefix`* in `namespace` from a thread of its own."""

    def __init__(self, kube: Client, namespace: str, prefix: str, tracker: SecretTracker) -> None:
        self.kube, self.namespace, self.prefix, self.tracker = kube, namespace, prefix, tracker
        self.lock = threading.Lock()
        self.events = 0
        self.errors = 0
        self.expired_now = (0, 0.0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, name="secret-watch", daemon=True),
            threading.Thread(target=self._tick, name="expiry-check", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _on_error(self, exc: Exception, count: int) -> OnErrorResult:
        if self._stop.is_set():
            return OnErrorResult(OnErrorAction.STOP)
        return OnErrorResult(OnErrorAction.RETRY, sleep=1)

    def _watch(self) -> None:
        labels: dict[str, Any] = {names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE}
        for kind, secret in self.kube.watch(
            Secret, namespace=self.namespace, labels=labels, on_error=self._on_error
        ):
            if self._stop.is_set():
                return
            name = secret.metadata.name if secret.metadata else None
            if not name or not name.startswith(self.prefix):
                continue
            with self.lock:
                self.events += 1
                try:
                    self._apply(kind, name, secret)
                except (KeyError, ValueError, TypeError, AssertionError, jwt.PyJWTError):
                    self.errors += 1  # counted in the results; the watch goes on

    def _apply(self, kind: str, name: str, secret: Secret) -> None:
        if kind == "DELETED":
            self.tracker.forget(name)
            return
        data = secret.data or {}
        annotations = (secret.metadata.annotations if secret.metadata else None) or {}
        token_id = annotations.get(names.ANNOTATION_TOKEN_ID)
        raw, expires = data.get(names.KEY_ACCESS_TOKEN), data.get(names.KEY_EXPIRES_AT)
        if not (raw and expires and token_id):
            return
        iat = unverified_claims(base64.b64decode(raw).decode())["iat"]
        assert isinstance(iat, int | float)
        self.tracker.observe(
            name,
            token_id,
            iat,
            base64.b64decode(expires).decode(),
            time.time(),
            obtained=_epoch(annotations.get(names.ANNOTATION_REFRESHED_AT)),
            declared=_epoch(annotations.get(names.ANNOTATION_NEXT_REFRESH_AT)),
        )

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                self.expired_now = self.tracker.check(time.time())


def _epoch(text: str | None) -> float | None:
    return parse_rfc3339(text).timestamp() if text else None


class CpuSampler:
    """(monotonic time, pid, CPU seconds) of the process `pid()` names, every `period` s."""

    def __init__(self, pid: Callable[[], int], period: float = 10.0) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> None:
        pid = self.pid()
        try:
            self.samples.append((time.monotonic(), pid, cpu_seconds(pid)))
        except (OSError, IndexError, ValueError):
            pass  # the process is gone (a restart): the next sample starts a new series

    def _run(self) -> None:
        self.sample()
        while not self._stop.wait(self.period):
            self.sample()
