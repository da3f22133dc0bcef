"""Prometheus metrics of the operator, in a registry of its own, and timed service clients.

Labels are bounded and never hold token values: an ApiToken's namespace and name, an
operation name, a result, a CamelCase reason.
"""

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from apitoken_operator.providers.answers import CreatedToken, RefreshResult, TokenMetadata
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.errors import ServiceError
from apitoken_operator.providers.oauth2 import TokenEndpointClient

T = TypeVar("T")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.access_token_expiry = Gauge(
            "apitoken_access_token_expiry_timestamp_seconds",
            "When the access token in an ApiToken's Secret expires (Unix time).",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.refresh_token_expiry = Gauge(
            "apitoken_refresh_token_expiry_timestamp_seconds",
            "When an ApiToken's refresh token expires, that is the token itself (Unix time).",
            ["namespace", "name"],
            registry=self.registry,
        )
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
        for gauge, moment in (
            (self.access_token_expiry, access_expires_at),
            (self.refresh_token_expiry, refresh_expires_at),
        ):
            if moment is None:
                _remove(gauge, namespace, name)
            else:
                gauge.labels(namespace=namespace, name=name).set(moment.timestamp())

    def forget_token(self, namespace: str, name: str) -> None:
        _remove(self.access_token_expiry, namespace, name)
        _remove(self.refresh_token_expiry, namespace, name)

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


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    try:
        gauge.remove(namespace, name)
    except KeyError:
        pass


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
