"""Prometheus metrics of one gateway (a private registry, so several apps can coexist)."""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PREFIX = "layerbus_gateway"
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Counters, gauges and histograms; updated and rendered on the event loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{_PREFIX}_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.errors = Counter(
            f"{_PREFIX}_errors",
            "errors answered to clients (HTTP or in-stream) by status",
            ["status"],
            registry=r,
        )
        self.prompt_tokens = Counter(f"{_PREFIX}_prompt_tokens", "prompt tokens", registry=r)
        self.generation_tokens = Counter(
            f"{_PREFIX}_generation_tokens", "generated tokens", registry=r
        )
        self.in_flight = Gauge(
            f"{_PREFIX}_requests_running", "requests admitted and running", registry=r
        )
        self.queued = Gauge(
            f"{_PREFIX}_requests_queued", "requests waiting for admission", registry=r
        )
        self.ttft = Histogram(
            f"{_PREFIX}_time_to_first_token_seconds",
            "arrival to first generated token",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{_PREFIX}_request_duration_seconds",
            "arrival to last token of generation",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.coordinator_ready = Gauge(
            f"{_PREFIX}_coordinator_ready", "1 when the coordinator reports ready", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class RequestTimer:
    """Times one generation request and records its tokens; owned by its task."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._start = time.monotonic()
        self._first_token = False

    def tokens(self, count: int) -> None:
        """New tokens arrived; the first call with count > 0 records TTFT."""
        if count <= 0:
            return
        if not self._first_token:
            self._first_token = True
            self._metrics.ttft.observe(time.monotonic() - self._start)
        self._metrics.generation_tokens.inc(count)

    def finished(self) -> None:
        """Record the end-to-end duration of a generation that completed."""
        self._metrics.e2e.observe(time.monotonic() - self._start)


class MetricsMiddleware:
    """ASGI middleware counting requests by route and status; runs on the event loop."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # stays 500 if the app raises before starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope.get("path", "")
            # Unknown paths share one label so scanners cannot blow up cardinality.
            route = path if path in self._routes else "other"
            self._metrics.requests.labels(route=route, status=str(status)).inc()
            if status >= 400:
                self._metrics.errors.labels(status=str(status)).inc()
