"""What latency a micro-batching server can reach at a given request rate.

Requests that arrive at random wait for each other even when the server is
only half busy. How long they wait depends on the arrival rate, the number of
model workers and how the cost of a batch grows with its size, not on the
implementation. :func:`simulate` runs the micro-batcher's discipline (see
``mlkit.serve.batching``) as a discrete-event simulation: Poisson arrivals,
one queue, first come first served; a free worker takes every waiting request
up to ``max_batch_size`` (after ``max_wait_s`` for a batch that is not full)
and is busy for ``cost(size)`` seconds.

The simulated server spends no CPU outside its batches and its workers never
slow each other down, so its latencies are a floor for a real server with
the same batch costs: the queueing limit. A benchmark compares the measured
latency with it to tell the implementation's overhead from what the load
itself costs; a capacity plan reads off the rate at which a latency objective
still holds.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Requests simulated before the statistics start: the queue begins empty,
# which a server under steady load never is.
_WARMUP_SHARE = 0.01


@dataclass(frozen=True)
class BatchCost:
    """Seconds one worker needs for a batch: ``fixed_s + per_item_s * size``."""

    fixed_s: float
    per_item_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fixed_s) and math.isfinite(self.per_item_s)):
            raise ValueError(f"batch costs must be finite, got {self}")
        if self.per_item_s < 0 or self(1) <= 0:
            raise ValueError(
                "a batch must take time and may not get cheaper as it grows: "
                f"got fixed_s={self.fixed_s}, per_item_s={self.per_item_s}"
            )

    def __call__(self, size: int) -> float:
        return self.fixed_s + self.per_item_s * size

    @classmethod
    def fit(cls, seconds_by_size: Mapping[float, float]) -> BatchCost:
        """The least-squares line through measured (mean batch size, seconds).

        Needs at least two different sizes. Raises ValueError otherwise, or
        when the measurements give a batch of one no time or a negative cost
        per item.
        """
        sizes = np.array(list(seconds_by_size), dtype=float)
        seconds = np.array(list(seconds_by_size.values()), dtype=float)
        if len(np.unique(sizes)) < 2:
            raise ValueError(
                "fitting a batch cost needs batches of at least two different "
                f"sizes, got sizes {sizes.tolist()}"
            )
        per_item, fixed = np.polyfit(sizes, seconds, 1)
        return cls(fixed_s=float(fixed), per_item_s=float(per_item))

    def capacity_rps(self, workers: int, max_batch_size: int) -> float:
        """Requests per second with every worker always running full batches."""
        return workers * max_batch_size / self(max_batch_size)


@dataclass(frozen=True)
class SimulatedLatency:
    """Latency percentiles of one simulation, in seconds, and how it batched."""

    rate_rps: float
    requests: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_batch: float
    # The share of the time the workers were busy.
    utilization: float


def simulate(
    rate_rps: float,
    cost: BatchCost,
    *,
    workers: int,
    max_batch_size: int,
    max_wait_s: float = 0.0,
    overhead_s: float = 0.0,
    requests: int = 200_000,
    seed: int = 0,
) -> SimulatedLatency:
    """Latencies of ``requests`` Poisson arrivals at ``rate_rps``.

    A request's latency is its wait, its batch's cost and ``overhead_s``
    (what it costs outside the model: parsing, decoding, the network).

    Raises ValueError on a rate the server cannot keep up with even with
    every batch full: the queue would grow without end.
    """
    if workers < 1 or max_batch_size < 1 or requests < 1:
        raise ValueError(
            "workers, max_batch_size and requests must be at least 1, got "
            f"{workers}, {max_batch_size} and {requests}"
        )
    if not (math.isfinite(max_wait_s) and max_wait_s >= 0 and overhead_s >= 0):
        raise ValueError(
            "max_wait_s and overhead_s must be finite and at least 0, got "
            f"{max_wait_s} and {overhead_s}"
        )
    capacity = cost.capacity_rps(workers, max_batch_size)
    if not (math.isfinite(rate_rps) and 0 < rate_rps < capacity):
        raise ValueError(
            f"rate_rps must be above 0 and below the capacity of {capacity:.1f} "
            f"requests/s ({workers} workers, full batches of {max_batch_size}); "
            f"got {rate_rps}"
        )

    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate_rps, requests)).tolist()
    finished = [0.0] * requests
    free_at = [0.0] * workers
    busy_s = 0.0
    batches = 0

    first = 0
    while first < requests:
        worker_free = heapq.heappop(free_at)
        if max_wait_s > 0:
            # A batch that is not full waits until its first request has
            # waited max_wait_s, unless a worker is busy until later anyway.
            fills_at = first + max_batch_size - 1
            due = arrivals[first] + max_wait_s
            if fills_at < requests:
                due = min(due, arrivals[fills_at])
            start = max(worker_free, due)
        else:
            start = max(worker_free, arrivals[first])
        end_of_batch = bisect.bisect_right(
            arrivals, start, first, min(first + max_batch_size, requests)
        )
        seconds = cost(end_of_batch - first)
        for index in range(first, end_of_batch):
            finished[index] = start + seconds
        heapq.heappush(free_at, start + seconds)
        busy_s += seconds
        batches += 1
        first = end_of_batch

    latencies = np.array(finished) - np.array(arrivals) + overhead_s
    counted = latencies[int(requests * _WARMUP_SHARE) :]
    p50, p95, p99 = np.percentile(counted, [50, 95, 99])
    span = max(finished) - arrivals[0]
    return SimulatedLatency(
        rate_rps=rate_rps,
        requests=len(counted),
        mean_s=float(counted.mean()),
        p50_s=float(p50),
        p95_s=float(p95),
        p99_s=float(p99),
        mean_batch=requests / batches,
        utilization=busy_s / (workers * span) if span > 0 else 0.0,
    )
