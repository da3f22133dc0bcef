"""The load generator: refresh-grant chains over lean keep-alive connections.

Runs as its own process (`python -m bench.loadgen SPEC.json`) so it never shares a GIL with the
orchestrator; prints one JSON result. Every virtual client owns one API token and chains it:
the refresh token of each response is the one it presents next, as a real client must, because
each refresh rotates the token.

Two modes:
- closed: `concurrency` clients, each sending its next request as soon as the last answered
  (throughput at fixed concurrency);
- open: requests start on a fixed schedule of `rate` per second whatever the answers do, and
  latency is measured from the scheduled start, so a stalled server cannot hide its queueing
  (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http1 import Http1Connection, form_post
from bench.stats import LatencySummary, rate_per_second

TOKEN_PATH = "/oauth2/token"
HARD_TIMEOUT_MARGIN_S = 30.0


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    tokens: list[str]
    mode: str  # "closed" or "open"
    duration_s: float
    warmup_s: float = 1.0
    concurrency: int = 64
    rate: float = 1000.0
    max_requests: int = 2_000_000

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        return cls(**data)


@dataclass
class Recorder:
    """Latencies of successful requests that started after the warm-up, and every failure."""

    measure_from: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    last_done: float = 0.0
    sent: int = 0
    first_error_body: str = ""

    def ok(self, started: float, done: float) -> None:
        if started >= self.measure_from:
            self.latencies.append(done - started)
            self.last_done = max(self.last_done, done)

    def failed(self, reason: str, body: bytes = b"") -> None:
        self.errors[reason] += 1
        if not self.first_error_body and body:
            # Error bodies are OAuth error objects; they never carry a token value.
            self.first_error_body = body[:300].decode(errors="replace")

    def result(self, spec: LoadSpec) -> dict[str, Any]:
        window = self.last_done - self.measure_from
        return {
            "mode": spec.mode,
            "concurrency": spec.concurrency if spec.mode == "closed" else None,
            "target_rate": spec.rate if spec.mode == "open" else None,
            "sent": self.sent,
            "ok": len(self.latencies),
            "errors": dict(self.errors),
            "first_error_body": self.first_error_body,
            "window_s": window,
            "throughput": rate_per_second(len(self.latencies), window),
            "latency": LatencySummary.from_seconds(self.latencies).as_dict(),
        }


class TokenChain:
    """One virtual client: its connection and the refresh token it will present next."""

    def __init__(self, spec: LoadSpec, token: str) -> None:
        self._spec = spec
        self.token = token
        self.connection: Http1Connection | None = None
        self.broken = False

    async def refresh(self, recorder: Recorder, started: float) -> None:
        if self.connection is None or not self.connection.is_open:
            self.connection = await Http1Connection.open(self._spec.host, self._spec.port)
        payload = form_post(
            self._spec.host,
            self._spec.port,
            TOKEN_PATH,
            {"grant_type": "refresh_token", "refresh_token": self.token},
        )
        recorder.sent += 1
        try:
            status, body = await self.connection.request(payload)
        except (ConnectionError, ValueError) as error:
            # Whether the server rotated the token is unknown, so the chain ends here too.
            recorder.failed(type(error).__name__)
            self.connection = None
            self.broken = True
            return
        done = time.perf_counter()
        if status != 200:
            # The chain is dead: the token service answered no new refresh token.
            recorder.failed(str(status), body)
            self.broken = True
            return
        self.token = json.loads(body)["refresh_token"]
        recorder.ok(started, done)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


async def run_closed(spec: LoadSpec) -> dict[str, Any]:
    chains = [TokenChain(spec, token) for token in spec.tokens[: spec.concurrency]]
    if len(chains) < spec.concurrency:
        raise ValueError(f"need {spec.concurrency} tokens, got {len(spec.tokens)}")
    start = time.perf_counter()
    recorder = Recorder(measure_from=start + spec.warmup_s)
    stop_at = recorder.measure_from + spec.duration_s

    async def client(chain: TokenChain) -> None:
        while not chain.broken and recorder.sent < spec.max_requests:
            started = time.perf_counter()
            if started >= stop_at:
                return
            await chain.refresh(recorder, started)

    tasks = {asyncio.create_task(client(chain)) for chain in chains}
    try:
        await _finish(tasks, spec.warmup_s + spec.duration_s + HARD_TIMEOUT_MARGIN_S, recorder)
    finally:
        for chain in chains:
            chain.close()
    return recorder.result(spec)


async def _finish(tasks: set[asyncio.Task[None]], timeout: float, recorder: Recorder) -> None:
    """Wait for the tasks; past the hard limit, cancel the rest and count them as unfinished."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        recorder.failed("unfinished at the time limit")
    if pending:
        await asyncio.wait(pending)


async def run_open(spec: LoadSpec) -> dict[str, Any]:
    """Start requests at `rate` per second; a request waits for a free chain if none is idle."""
    idle: asyncio.Queue[TokenChain] = asyncio.Queue()
    chains = [TokenChain(spec, token) for token in spec.tokens]
    for chain in chains:
        idle.put_nowait(chain)
    total = min(int(spec.rate * (spec.warmup_s + spec.duration_s)), spec.max_requests)
    interval = 1.0 / spec.rate
    start = time.perf_counter() + 0.05
    recorder = Recorder(measure_from=start + spec.warmup_s)
    in_flight: set[asyncio.Task[None]] = set()

    async def fire(scheduled: float) -> None:
        chain = await idle.get()
        try:
            if chain.broken:
                # Count it and hand the chain on, so a dead run ends on time instead of hanging.
                recorder.sent += 1
                recorder.failed("chain_broken")
            else:
                await chain.refresh(recorder, scheduled)
        finally:
            idle.put_nowait(chain)

    issued = 0
    while issued < total:
        now = time.perf_counter()
        due = min(total, int((now - start) / interval) + 1) if now >= start else 0
        while issued < due:
            task = asyncio.create_task(fire(start + issued * interval))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            issued += 1
        next_at = start + issued * interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    try:
        # Requests still queued behind a slow service get the margin to finish, then count
        # as failures: the schedule is the experiment, not the server's pace.
        await _finish(set(in_flight), HARD_TIMEOUT_MARGIN_S, recorder)
    finally:
        for chain in chains:
            chain.close()
    return recorder.result(spec)


async def run(spec: LoadSpec) -> dict[str, Any]:
    if spec.mode == "closed":
        return await run_closed(spec)
    if spec.mode == "open":
        return await run_open(spec)
    raise ValueError(f"unknown mode {spec.mode!r}")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.loadgen SPEC.json", file=sys.stderr)
        return 2
    spec = LoadSpec.from_json(json.loads(Path(argv[0]).read_text()))
    if spec.host != "127.0.0.1":
        raise SystemExit("the load generator only targets 127.0.0.1")
    import uvloop

    cpu_before = _cpu_seconds()
    result = uvloop.run(run(spec))
    cpu = _cpu_seconds() - cpu_before
    # The generator's own CPU per request tells whether it could have been the bottleneck.
    result["generator_cpu_s"] = cpu
    result["generator_cpu_us_per_request"] = cpu / result["sent"] * 1e6 if result["sent"] else 0.0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
