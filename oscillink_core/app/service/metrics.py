"""Prometheus metrics, one registry per app (text format at /metrics)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("oscillink_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("oscillink_request_seconds", "request latency", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.cache = Counter("oscillink_cache_total", "bundle cache lookups", ["result"], registry=self.registry)
        self.rejections = Counter("oscillink_quota_rejections_total", "requests refused by a limit", ["reason"],
                                  registry=self.registry)
        self.units = Counter("oscillink_units_total", "units (N x D) counted", registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
