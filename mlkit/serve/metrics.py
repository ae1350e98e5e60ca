"""Prometheus metrics of the service, in a registry of its own.

One registry per app (not the process-wide default), so that two apps in one
process -- as in the tests -- never share or clash over counters.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Seconds; from a cached text embedding to a request that waited in a full queue.
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The counters, histograms and gauges the service exports on /metrics."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlkit_requests",
            "HTTP requests answered, by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlkit_request_duration_seconds",
            "Time from the request's arrival to its response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mlkit_batch_size",
            "Items per model batch.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "mlkit_batch_duration_seconds",
            "Time the model took per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mlkit_queue_depth",
            "Requests waiting for a model batch.",
            registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge(
            "mlkit_requests_in_flight",
            "HTTP requests being handled.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "mlkit_requests_rejected",
            "Requests refused before reaching the model, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "mlkit_ready",
            "1 when the model is loaded and the server is not draining.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "mlkit_model_info",
            "The served model: always 1, the labels say which.",
            ["version", "text_encoder", "classes"],
            registry=self.registry,
        )

    def set_model(self, version: str, text_encoder: str, classes: int) -> None:
        self.model_info.labels(version, text_encoder, str(classes)).set(1)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
