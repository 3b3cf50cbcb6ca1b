"""Prometheus metrics, in a registry of the app's own (several apps in one process, as in tests, stay apart)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series only double the output

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("guardreasoner_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("guardreasoner_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.items = Counter("guardreasoner_items", "items classified", registry=self.registry)
        self.tokens = Counter("guardreasoner_generated_tokens", "tokens the model generated",
                              registry=self.registry)
        self.parse_failures = Counter("guardreasoner_parse_failures",
                                      "results where the model gave no usable verdict somewhere",
                                      registry=self.registry)
        self.fail_closed = Counter("guardreasoner_fail_closed_verdicts",
                                   "verdicts the guard set to harmful because the model gave none",
                                   registry=self.registry)
        self.batches = Counter("guardreasoner_batches", "generate calls the batcher made", registry=self.registry)
        self.batch_items = Histogram("guardreasoner_batch_items", "items per generate call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def record_results(self, results) -> None:
        for result in results:
            self.items.inc()
            self.tokens.inc(result.output_tokens or 0)
            if result.status == "failed":
                self.parse_failures.inc()
            self.fail_closed.inc(sum(1 for verdict in result.verdicts.values() if verdict.fail_closed))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every response (401 and 413 included) by route; paths the app does not serve count as "other",
    so random paths cannot blow up the labels. ``routes`` is the app's set of paths (filled as routes are added)."""

    def __init__(self, app, metrics: Metrics, routes: set[str]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = {"code": 500}

        async def tracked_send(event):
            if event["type"] == "http.response.start":
                status["code"] = event["status"]
            await send(event)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            name = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.requests.labels(name, str(status["code"])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - began)
