"""`python -m bench`: the baseline and the refresh-grant benchmarks, in one run."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.loadgen import LoadSpec
from bench.ports import free_loopback_port
from bench.postgres import running_postgres
from bench.service import (
    create_refresh_tokens,
    init_workspace,
    running_service,
    service_environment,
)
from bench.signing import SigningResult, measure_service_signing, measure_signing

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Options:
    duration_s: float
    warmup_s: float
    concurrency: int
    rate: float
    open_tokens: int
    backends: list[str]
    output: Path | None
    profile: bool
    workers: int
    more_workers: int


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop clients")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s")
    parser.add_argument("--open-tokens", type=int, default=200, help="token chains, open loop")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--output", default=str(REPO / "docs" / "benchmarks.md"), help="'-' to only print"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also run the SQLite closed loop under cProfile"
    )
    parser.add_argument("--workers", type=int, default=1, help="service worker processes")
    parser.add_argument(
        "--more-workers",
        type=int,
        default=2,
        help="also measure SQLite with this many worker processes (closed and open loop); "
        "0 or 1 skips it",
    )
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {backend!r}")
    return Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        open_tokens=args.open_tokens,
        backends=backends,
        output=None if args.output == "-" else Path(args.output),
        profile=args.profile,
        workers=args.workers,
        more_workers=args.more_workers,
    )


def run_load(spec: LoadSpec, workdir: Path) -> dict[str, Any]:
    """One load-generator process; the spec (with token values) lives in a private file."""
    spec_file = workdir / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec.__dict__))
    spec_file.chmod(0o600)
    try:
        timeout = spec.warmup_s + spec.duration_s + 120
        result = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", str(spec_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
    finally:
        spec_file.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-3000:]}")
    loaded: dict[str, Any] = json.loads(result.stdout)
    latency = loaded["latency"]
    _log(
        f"  {loaded['throughput']:,.0f}/s, p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms, errors {loaded['errors'] or 0}"
    )
    if loaded["first_error_body"]:
        _log(f"  first error answer: {loaded['first_error_body']}")
    return loaded


@contextlib.contextmanager
def trivial_server() -> Iterator[int]:
    port = free_loopback_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.trivial_server", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the trivial server did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class BackendRuns:
    backend: str
    version: str
    closed: dict[str, Any]
    open: dict[str, Any]
    # Open loop at half the closed-loop throughput: latency when the service keeps up.
    open_sustainable: dict[str, Any] | None = None
    profile_top: str = ""
    # The same closed and open loops with `serve --workers N` (SQLite only), if measured.
    more_workers: int = 0
    closed_more_workers: dict[str, Any] | None = None
    open_more_workers: dict[str, Any] | None = None


@dataclass
class Results:
    started: datetime
    machine: dict[str, str]
    packages: dict[str, str]
    options: Options
    signing: dict[str, float] = field(default_factory=dict)
    service_signing: dict[str, float] = field(default_factory=dict)
    generator_closed: dict[str, Any] = field(default_factory=dict)
    generator_open: dict[str, Any] = field(default_factory=dict)
    backends: list[BackendRuns] = field(default_factory=list)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def measure_generator(options: Options, workdir: Path, results: Results) -> None:
    with trivial_server() as port:
        tokens = [f"apt_trivial_{i}" for i in range(max(options.concurrency, options.open_tokens))]
        _log(f"load generator alone, closed loop, {options.concurrency} clients")
        results.generator_closed = run_load(closed_spec(port, tokens, options), workdir)
        _log(f"load generator alone, open loop, {options.rate:g}/s")
        results.generator_open = run_load(
            open_spec(port, tokens[: options.open_tokens], options, options.rate), workdir
        )


def closed_spec(port: int, tokens: list[str], options: Options) -> LoadSpec:
    return LoadSpec(
        host="127.0.0.1",
        port=port,
        tokens=tokens,
        mode="closed",
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        concurrency=options.concurrency,
    )


def open_spec(port: int, tokens: list[str], options: Options, rate: float) -> LoadSpec:
    return LoadSpec(
        host="127.0.0.1",
        port=port,
        tokens=tokens,
        mode="open",
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        rate=rate,
    )


def measured_load(service_pid: int, spec: LoadSpec, workdir: Path) -> dict[str, Any]:
    """`run_load`, with the service's CPU time per request (all its processes) added."""
    cpu_before = machine.process_cpu_seconds(service_pid)
    result = run_load(spec, workdir)
    result["service_cpu_us_per_request"] = _per_request_us(
        machine.process_cpu_seconds(service_pid) - cpu_before, result["sent"]
    )
    return result


def measure_backend(
    backend: str, database_url: str, version: str, options: Options, workdir: Path
) -> BackendRuns:
    port = free_loopback_port()
    env = service_environment(issuer=f"http://127.0.0.1:{port}")
    _log(f"{backend}: init")
    admin_access_token = init_workspace(database_url, env)
    log_path = workdir / f"service-{backend}.log"
    profile_path = workdir / f"service-{backend}.prof" if options.profile else None
    with running_service(database_url, env, port, log_path, options.workers) as service:
        _log(f"{backend}: creating {options.concurrency + options.open_tokens} API tokens")
        closed_tokens = create_refresh_tokens(
            service.base_url, admin_access_token, options.concurrency, "closed"
        )
        open_tokens = create_refresh_tokens(
            service.base_url, admin_access_token, options.open_tokens, "open"
        )
        _log(f"{backend}: closed loop, {options.concurrency} clients")
        main_before = machine.main_thread_cpu_seconds(service.pid)
        closed = measured_load(service.pid, closed_spec(port, closed_tokens, options), workdir)
        if options.workers == 1:
            # The event loop's thread against the rest (database driver and threadpool threads).
            closed["service_main_thread_cpu_us_per_request"] = _per_request_us(
                machine.main_thread_cpu_seconds(service.pid) - main_before, closed["sent"]
            )
        _log(f"{backend}: open loop, {options.rate:g}/s")
        opened = measured_load(
            service.pid, open_spec(port, open_tokens, options, options.rate), workdir
        )
        sustainable = sustainable_rate(closed["throughput"])
        opened_sustainable: dict[str, Any] | None = None
        if 0 < sustainable < options.rate:
            chains = create_refresh_tokens(
                service.base_url, admin_access_token, options.open_tokens, "sustainable"
            )
            _log(f"{backend}: open loop at half the closed-loop throughput, {sustainable:g}/s")
            opened_sustainable = measured_load(
                service.pid, open_spec(port, chains, options, sustainable), workdir
            )
    failures = {*closed["errors"], *opened["errors"]} - {"unfinished at the time limit"}
    if failures:
        _log(f"{backend}: the service's log ends with:\n{log_path.read_text()[-2000:]}")
    runs = BackendRuns(
        backend=backend,
        version=version,
        closed=closed,
        open=opened,
        open_sustainable=opened_sustainable,
    )
    if backend == "sqlite" and options.more_workers > max(1, options.workers):
        runs.more_workers = options.more_workers
        runs.closed_more_workers, runs.open_more_workers = measure_more_workers(
            database_url, env, options, workdir, admin_access_token
        )
    if profile_path is not None:
        runs.profile_top = profile_closed_loop(
            database_url, env, options, workdir, admin_access_token, profile_path
        )
    return runs


def measure_more_workers(
    database_url: str,
    env: dict[str, str],
    options: Options,
    workdir: Path,
    admin_access_token: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The closed and open loops again with `serve --workers N`, on fresh token chains."""
    workers = options.more_workers
    # Same issuer as the first run (not this port): the admin's access token names it.
    port = free_loopback_port()
    log_path = workdir / f"service-{workers}-workers.log"
    with running_service(database_url, env, port, log_path, workers) as service:
        closed_tokens = create_refresh_tokens(
            service.base_url, admin_access_token, options.concurrency, f"closed-{workers}w"
        )
        open_tokens = create_refresh_tokens(
            service.base_url, admin_access_token, options.open_tokens, f"open-{workers}w"
        )
        _log(f"sqlite, {workers} workers: closed loop, {options.concurrency} clients")
        closed = measured_load(service.pid, closed_spec(port, closed_tokens, options), workdir)
        _log(f"sqlite, {workers} workers: open loop, {options.rate:g}/s")
        opened = measured_load(
            service.pid, open_spec(port, open_tokens, options, options.rate), workdir
        )
    return closed, opened


def profile_closed_loop(
    database_url: str,
    env: dict[str, str],
    options: Options,
    workdir: Path,
    admin_access_token: str,
    profile_path: Path,
) -> str:
    """The closed loop again, with the service under cProfile; the top functions by own time."""
    # Same issuer as the first run (not this port): the admin's access token names it.
    port = free_loopback_port()
    with running_service(
        database_url, env, port, workdir / "service-profiled.log", profile_to=profile_path
    ) as service:
        tokens = create_refresh_tokens(
            service.base_url, admin_access_token, options.concurrency, "profiled"
        )
        _log("profiling: closed loop under cProfile")
        os.kill(service.pid, signal.SIGUSR1)  # profile the load only, not start-up and seeding
        run_load(closed_spec(port, tokens, options), workdir)
        os.kill(service.pid, signal.SIGUSR2)
    return report.profile_summary(str(profile_path))


def sustainable_rate(closed_loop_throughput: float) -> float:
    """Half the measured capacity, rounded down to tens: a load the service should keep up with."""
    return float(int(closed_loop_throughput / 2 / 10) * 10)


def _per_request_us(cpu_s: float, requests: int) -> float:
    return cpu_s / requests * 1e6 if requests else 0.0


@contextlib.contextmanager
def exclusive_machine() -> Iterator[None]:
    """One benchmark at a time on this machine: two runs would halve each other's figures."""
    lock_path = Path(tempfile.gettempdir()) / "apitoken-bench.lock"
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("another benchmark is running on this machine; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _signing_sample() -> SigningResult:
    _log("JWT signing ceiling (sign-only loop, one process)")
    return measure_signing(duration_s=3.0)


def _ceiling(samples: list[SigningResult]) -> dict[str, float]:
    rates = [s.per_second for s in samples]
    return {
        "per_second": statistics.median(rates),
        "low": min(rates),
        "high": max(rates),
        "samples": float(len(samples)),
        "signatures": float(sum(s.signatures for s in samples)),
        "token_bytes": float(samples[0].token_bytes),
    }


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    with exclusive_machine():
        return _run(options)


def _run(options: Options) -> int:
    results = Results(
        started=datetime.now(UTC),
        machine=machine.describe(),
        packages=machine.package_versions(),
        options=options,
    )
    with tempfile.TemporaryDirectory(prefix="apitoken-bench-") as tmp:
        workdir = Path(tmp)
        # The ceiling moves with the machine (a shared VM's core: 10,000 to 14,000/s between
        # runs minutes apart), so it is sampled before the runs and after each backend, and
        # the targets use the median.
        ceiling = [_signing_sample()]
        _log("signing as the service does it (KeyRing.sign), for comparison")
        service_signing = measure_service_signing(duration_s=3.0)
        results.service_signing = {
            "per_second": service_signing.per_second,
            "signatures": float(service_signing.signatures),
        }
        measure_generator(options, workdir, results)
        for backend in options.backends:
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'bench.db'}"
                version = f"SQLite {results.machine['sqlite']}"
                results.backends.append(measure_backend(backend, url, version, options, workdir))
            else:
                with running_postgres() as postgres:
                    results.backends.append(
                        measure_backend(backend, postgres.url(), postgres.version, options, workdir)
                    )
            ceiling.append(_signing_sample())
        results.signing = _ceiling(ceiling)
    text = report.render(results)
    print(text)
    if options.output is not None:
        previous = options.output.read_text() if options.output.exists() else ""
        notes = report.kept_notes(previous)
        options.output.write_text(text + ("\n" + notes if notes else ""))
        _log(f"wrote {options.output}")
    return 0
