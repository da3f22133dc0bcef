"""Prometheus metrics, one registry per app. Labels carry route templates, never values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "apitoken_service_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.token_latency = Histogram(
            "apitoken_service_token_endpoint_seconds",
            "Latency of POST /oauth2/token.",
            ["status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.tokens = Gauge(
            "apitoken_service_tokens",
            "API tokens by status (active, disabled, expired).",
            ["status"],
            registry=self.registry,
        )
        self.replays = Counter(
            "apitoken_service_refresh_replays",
            "Rotated refresh tokens replayed after the grace period (token disabled).",
            registry=self.registry,
        )

    def set_token_counts(self, counts: dict[str, int]) -> None:
        for status, count in counts.items():
            self.tokens.labels(status=status).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
