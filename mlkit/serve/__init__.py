"""Serving: the pieces of the inference service.

``batching`` groups concurrent requests into model batches; ``loadtest``
(imported as ``mlkit.serve.loadtest``, it needs httpx) drives load at a
service and reports throughput, latency percentiles and a timeline.
"""

from mlkit.serve.batching import (
    BatcherConfig,
    BatchResultError,
    Draining,
    MicroBatcher,
    QueueFull,
    parse_batcher_config,
)

__all__ = [
    "BatchResultError",
    "BatcherConfig",
    "Draining",
    "MicroBatcher",
    "QueueFull",
    "parse_batcher_config",
]
