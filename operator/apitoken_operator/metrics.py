"""Prometheus metrics of the operator, in a registry of its own, and timed service clients.

Labels are bounded and never hold token values: an ApiToken's namespace and name, an
operation name, a result, a CamelCase reason.
"""

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apitoken_operator.providers.answers import CreatedToken, RefreshResult, TokenMetadata
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.errors import ServiceError
from apitoken_operator.providers.oauth2 import TokenEndpointClient

T = TypeVar("T")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.expiries = TokenExpiries()
        self.registry.register(self.expiries)
        self.refreshes = Counter(
            "apitoken_refreshes",
            "Access-token refreshes of ApiTokens, by result (success, failure).",
            ["result"],
            registry=self.registry,
        )
        self.service_latency = Histogram(
            "apitoken_service_request_duration_seconds",
            "Latency of calls to token services, by operation and outcome.",
            ["operation", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconciles = Counter(
            "apitoken_reconciles",
            "Reconcile runs of ApiTokens, scheduled and deletion runs alike.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "apitoken_reconcile_errors",
            "Failed reconcile runs, by resource kind and reason.",
            ["kind", "reason"],
            registry=self.registry,
        )

    def observe_token(
        self,
        namespace: str,
        name: str,
        *,
        access_expires_at: datetime | None,
        refresh_expires_at: datetime | None,
    ) -> None:
        self.expiries.set(namespace, name, access_expires_at, refresh_expires_at)

    def forget_token(self, namespace: str, name: str) -> None:
        self.expiries.forget(namespace, name)

    def serve(self, port: int, address: str = "0.0.0.0") -> Callable[[], None]:
        """Serve /metrics from a thread of its own; returns a function that stops it."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            thread.join(timeout=5)

        return stop

    async def timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call
            outcome = "success"
            return result
        except ServiceError as exc:
            outcome = exc.reason
            raise
        finally:
            self.service_latency.labels(operation=operation, outcome=outcome).observe(
                time.perf_counter() - started
            )


class TokenExpiries(Collector):
    """The two expiry gauges of every ApiToken, kept as one pair of numbers per ApiToken and
    turned into samples at scrape time. A labelled `Gauge` keeps a child object with its own
    lock per label set: 14 MB for the two gauges at 10,000 ApiTokens, against 2.5 MB here
    (docs/benchmarks.md)."""

    ACCESS = "apitoken_access_token_expiry_timestamp_seconds"
    REFRESH = "apitoken_refresh_token_expiry_timestamp_seconds"

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        self._lock = threading.Lock()  # scrapes run on the metrics server's thread

    def set(
        self, namespace: str, name: str, access: datetime | None, refresh: datetime | None
    ) -> None:
        pair = (_seconds(access), _seconds(refresh))
        with self._lock:
            if pair == (None, None):
                self._values.pop((namespace, name), None)
            else:
                self._values[(namespace, name)] = pair

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._values.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            items = list(self._values.items())
        access = GaugeMetricFamily(
            self.ACCESS,
            "When the access token in an ApiToken's Secret expires (Unix time).",
            labels=["namespace", "name"],
        )
        refresh = GaugeMetricFamily(
            self.REFRESH,
            "When an ApiToken's refresh token expires, that is the token itself (Unix time).",
            labels=["namespace", "name"],
        )
        for (namespace, name), (access_at, refresh_at) in items:
            if access_at is not None:
                access.add_metric([namespace, name], access_at)
            if refresh_at is not None:
                refresh.add_metric([namespace, name], refresh_at)
        yield access
        yield refresh


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _open() -> None:
    return None


class TimedManagement:
    """A TokenServiceClient whose calls are timed, each after the write gate (`gate` raises
    when this process lost its leadership)."""

    def __init__(
        self, inner: TokenServiceClient, metrics: Metrics, gate: Callable[[], None] = _open
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._gate = gate

    async def create_token(
        self, *, name: str, lifetime_days: int, external_ref: str | None
    ) -> CreatedToken:
        self._gate()
        return await self._metrics.timed(
            "create_token",
            self._inner.create_token(
                name=name, lifetime_days=lifetime_days, external_ref=external_ref
            ),
        )

    async def disable_token(self, token_id: str) -> TokenMetadata:
        self._gate()
        return await self._metrics.timed("disable_token", self._inner.disable_token(token_id))

    async def delete_token(self, token_id: str) -> None:
        self._gate()
        await self._metrics.timed("delete_token", self._inner.delete_token(token_id))

    async def list_tokens(self, *, external_ref: str) -> list[TokenMetadata]:
        self._gate()
        return await self._metrics.timed(
            "list_tokens", self._inner.list_tokens(external_ref=external_ref)
        )


class TimedRefresh:
    """A token endpoint client whose calls are timed and, for ApiTokens, counted by result;
    each after the write gate, like `TimedManagement`."""

    def __init__(
        self,
        inner: TokenEndpointClient,
        metrics: Metrics,
        *,
        count: bool = True,
        gate: Callable[[], None] = _open,
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._count = count
        self._gate = gate

    async def refresh(self, refresh_token: str) -> RefreshResult:
        self._gate()
        try:
            result = await self._metrics.timed("refresh", self._inner.refresh(refresh_token))
        except ServiceError:
            if self._count:
                self._metrics.refreshes.labels(result="failure").inc()
            raise
        if self._count:
            self._metrics.refreshes.labels(result="success").inc()
        return result

    async def revoke(self, refresh_token: str) -> bool:
        self._gate()
        return await self._metrics.timed("revoke", self._inner.revoke(refresh_token))
