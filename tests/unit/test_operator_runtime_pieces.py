"""The pure pieces of the Kubernetes layer: which owners a Secret event wakes, how long a
daemon sleeps, the daemon loop itself, metrics, and the command line."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from apitoken_operator.cli import launch_config, parser, quiet_http_request_lines
from apitoken_operator.handlers.daemons import keep_running, sleep_seconds
from apitoken_operator.handlers.memory import glibc_trim, trim_every
from apitoken_operator.handlers.secret_watch import owners_to_wake
from apitoken_operator.metrics import Metrics, TimedManagement, TimedRefresh
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.errors import InvalidGrant
from apitoken_operator.providers.oauth2 import TokenEndpointClient
from apitoken_operator.settings import OperatorSettings
from support.clock import T0

pytestmark = pytest.mark.unit

OURS = {"apiVersion": "apitoken.dev/v1alpha1", "kind": "ApiToken", "uid": "uid-a"}
OTHER = {"apiVersion": "apps/v1", "kind": "Deployment", "uid": "uid-x"}


@pytest.mark.parametrize(
    ("event", "meta", "owners", "written", "woken"),
    [
        ("MODIFIED", {"ownerReferences": [OURS, OTHER]}, {}, {}, {"uid-a"}),
        ("MODIFIED", {}, {("ns", "s"): "uid-b"}, {}, {"uid-b"}),
        ("MODIFIED", {"ownerReferences": [OURS]}, {}, {("ns", "s"): "7"}, set()),
        ("DELETED", {"ownerReferences": [OURS]}, {}, {("ns", "s"): "7"}, {"uid-a"}),
        ("ADDED", {"ownerReferences": [OTHER]}, {}, {}, set()),
        ("ADDED", {"ownerReferences": [OURS]}, {}, {}, set()),
        ("ADDED", {}, {("ns", "s"): "uid-b"}, {}, {"uid-b"}),
    ],
    ids=[
        "apitoken-owner-not-others",
        "orphaned-secret-by-name",
        "own-write-wakes-nobody",
        "deletion-always-wakes",
        "foreign-owner-only",
        "listing-wakes-no-apitoken-not-run-yet",
        "recreated-for-an-apitoken-run-here",
    ],
)
def test_owners_to_wake(
    event: str,
    meta: dict[str, Any],
    owners: dict[tuple[str, str], str],
    written: dict[tuple[str, str], str],
    woken: set[str],
) -> None:
    meta = {"namespace": "ns", "name": "s", "resourceVersion": "7", **meta}
    assert owners_to_wake(event, meta, owners, written) == woken


@pytest.mark.parametrize(
    ("next_at", "expected"),
    [
        (None, 300.0),
        (T0 + timedelta(seconds=42), 42.0),
        (T0 - timedelta(seconds=5), 0.2),
        (T0 + timedelta(hours=2), 300.0),
    ],
    ids=["idle-when-nothing-due", "until-due", "floor-when-overdue", "capped-at-idle"],
)
def test_sleep_seconds(next_at: datetime | None, expected: float) -> None:
    got = sleep_seconds(next_at, T0, idle=timedelta(minutes=5), floor=timedelta(milliseconds=200))
    assert got == pytest.approx(expected)


async def test_keep_running_wakes_early_and_backs_off_after_failures() -> None:
    wake = asyncio.Event()
    calls: list[str] = []
    backoffs: list[int] = []

    async def step() -> datetime | None:
        calls.append("run")
        if len(calls) == 2:
            raise RuntimeError("apiserver trouble")
        return datetime.now(UTC) + timedelta(hours=1)  # far away: only a wake-up runs it

    def backoff(attempt: int) -> float:
        backoffs.append(attempt)
        return 0.01

    task = asyncio.create_task(
        keep_running(
            step,
            wake,
            clock=lambda: datetime.now(UTC),
            idle=timedelta(hours=1),
            error_backoff=backoff,
        )
    )
    await asyncio.sleep(0.05)
    assert calls == ["run"]
    wake.set()  # early: runs at once, fails, retries after the backoff
    for _ in range(100):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    assert calls == ["run", "run", "run"]
    assert backoffs == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_metrics_expiry_gauges_are_set_and_removed() -> None:
    metrics = Metrics()
    metrics.observe_token(
        "ns", "tok", access_expires_at=T0, refresh_expires_at=T0 + timedelta(days=90)
    )
    value = metrics.registry.get_sample_value(
        "apitoken_access_token_expiry_timestamp_seconds", {"namespace": "ns", "name": "tok"}
    )
    assert value == T0.timestamp()
    metrics.forget_token("ns", "tok")
    text = generate_latest(metrics.registry).decode()
    assert 'name="tok"' not in text


async def test_timed_clients_record_latency_and_refresh_results() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(400, json={"error": "invalid_grant"})
        return httpx.Response(200, json={"items": []})

    metrics = Metrics()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        endpoint = TimedRefresh(
            TokenEndpointClient(http, token_endpoint="http://svc/oauth2/token"), metrics
        )
        with pytest.raises(InvalidGrant):
            await endpoint.refresh("rt-secret-value")

        async def bearer() -> str:
            return "at-secret-value"

        management = TimedManagement(
            TokenServiceClient(http, base_url="http://svc", workspace="w", bearer=bearer),
            metrics,
        )
        assert await management.list_tokens(external_ref="uid") == []
    text = generate_latest(metrics.registry).decode()
    assert 'apitoken_refreshes_total{result="failure"} 1.0' in text
    assert (
        'apitoken_service_request_duration_seconds_count{operation="refresh",'
        'outcome="RefreshTokenRejected"} 1.0' in text
    )
    assert (
        'apitoken_service_request_duration_seconds_count{operation="list_tokens",'
        'outcome="success"} 1.0' in text
    )
    assert "secret-value" not in text


def test_command_line() -> None:
    args = parser().parse_args(
        ["run", "--namespace", "a", "-n", "b", "--metrics-port", "0", "--standalone"]
    )
    config = launch_config(args, OperatorSettings())
    assert config.namespaces == ("a", "b")
    assert config.metrics_port is None
    assert args.standalone and args.liveness_port == 8080 and args.log_format == "json"
    assert config.settings.token_workers == OperatorSettings().token_workers
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--namespace", "a", "--all-namespaces"])
    workers = launch_config(
        parser().parse_args(["run", "--token-workers", "4"]), OperatorSettings()
    )
    assert workers.settings.token_workers == 4
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--token-workers", "0"])


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APITOKEN_OPERATOR_REFRESH_MARGIN", "1s")
    monkeypatch.setenv("APITOKEN_OPERATOR_BACKOFF_CAP", "4s")
    settings = OperatorSettings()
    assert settings.timing().refresh_margin == timedelta(seconds=1)
    assert settings.timing().backoff_cap == timedelta(seconds=4)


@pytest.mark.parametrize(("verbose", "shown"), [(False, False), (True, True)])
def test_http_request_lines_show_only_when_verbose(verbose: bool, shown: bool) -> None:
    quiet_http_request_lines(verbose=verbose)
    for client in ("httpx", "httpx2"):
        assert logging.getLogger(client).isEnabledFor(logging.INFO) is shown
    for core in ("httpcore", "httpcore2"):
        assert not logging.getLogger(core).isEnabledFor(logging.DEBUG)


async def test_freed_memory_is_handed_back_now_and_then() -> None:
    calls: list[float] = []
    task = asyncio.create_task(trim_every(0.01, lambda: calls.append(0.0)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3
    # Off: returns at once, trims nothing.
    await asyncio.wait_for(trim_every(0, lambda: calls.append(1.0)), timeout=1)
    await asyncio.wait_for(trim_every(1, None), timeout=1)
    assert 1.0 not in calls
    # This machine's libc is glibc (as in the image): the real call works.
    trim = glibc_trim()
    assert trim is not None and trim() in (0, 1)


def test_metrics_expiry_gauges_of_many_tokens_each_their_own() -> None:
    metrics = Metrics()
    for i in range(3):
        metrics.observe_token(
            "ns", f"t{i}", access_expires_at=T0 + timedelta(seconds=i), refresh_expires_at=None
        )
    metrics.observe_token("ns", "t1", access_expires_at=None, refresh_expires_at=T0)
    access = "apitoken_access_token_expiry_timestamp_seconds"
    refresh = "apitoken_refresh_token_expiry_timestamp_seconds"

    def sample(family: str, name: str) -> float | None:
        return metrics.registry.get_sample_value(family, {"namespace": "ns", "name": name})

    assert [sample(access, f"t{i}") for i in range(3)] == [
        T0.timestamp(),
        None,
        (T0 + timedelta(seconds=2)).timestamp(),
    ]
    assert [sample(refresh, f"t{i}") for i in range(3)] == [None, T0.timestamp(), None]
    metrics.observe_token("ns", "t1", access_expires_at=None, refresh_expires_at=None)
    assert sample(refresh, "t1") is None
