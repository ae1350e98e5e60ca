"""Dynamic micro-batching: many concurrent requests, one model call per batch.

A web server awaits :meth:`MicroBatcher.submit` once per request. The batcher
gathers the waiting items into batches of up to ``max_batch_size``, waiting at
most ``max_wait_ms`` after the first item of a batch arrived, and runs
``predict_batch`` on each batch in one of ``workers`` dedicated threads, so the
event loop keeps serving while the model computes. While every worker is busy,
the next batch is being collected.

One worker calls the model from one thread only. Several workers run several
batches at once, each on fewer torch threads: on a small machine that keeps
every core busy where one batch on all cores would leave them waiting for each
other (see ``ServeConfig.model_workers``). ``predict_batch`` must then be safe
to call from several threads at once.

The results are exactly what ``predict_batch([item])[0]`` would give for each
item alone, provided ``predict_batch`` treats the items of a batch
independently (no batch statistics, such as batch norm in training mode).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mlkit.errors import (
    MlkitError,
    validate_config,
)

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

# How many recent batches the retry-after estimate averages over.
_RECENT_BATCHES = 20
# The shortest retry-after ever suggested, so that clients never busy-loop.
_MIN_RETRY_AFTER_S = 0.01


class BatcherConfig(BaseModel):
    """How requests are grouped into batches.

    ``max_batch_size`` is the most items one ``predict_batch`` call receives;
    ``max_wait_ms`` is how long the first item of a batch may wait for others
    (0 sends whatever is queued at once); ``max_queue`` is how many items may
    wait for a batch before new submissions are refused with QueueFull;
    ``workers`` is how many batches may run at once, each in its own thread.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=16, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    max_queue: int = Field(default=256, ge=1)
    workers: int = Field(default=1, ge=1, le=64)


def parse_batcher_config(
    data: BatcherConfig | Mapping[str, Any] | None, *, source: str = "batcher config"
) -> BatcherConfig:
    """Validate ``data`` into a BatcherConfig; None means all defaults.

    Raises ConfigError naming ``source`` and every invalid field.
    """
    return validate_config(BatcherConfig, data, what="batcher config", source=source)


class QueueFull(MlkitError):
    """Too many requests are waiting; the client should retry later.

    ``retry_after_s`` estimates when the queue will have room, from its length
    and the latency of recent batches (suitable for a Retry-After header).
    """

    def __init__(self, queue_depth: int, retry_after_s: float) -> None:
        self.queue_depth = queue_depth
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the batching queue is full ({queue_depth} requests waiting); "
            f"retry in about {retry_after_s:.2f} s"
        )


class Draining(MlkitError):
    """The batcher is shutting down and accepts no new requests."""

    def __init__(self) -> None:
        super().__init__(
            "the batcher is shutting down and accepts no new requests; "
            "send the request to another replica"
        )


class BatchResultError(MlkitError):
    """``predict_batch`` did not return exactly one result per item."""


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[In, Out]):
    """Runs ``predict_batch`` on batches of concurrently submitted items.

    ``predict_batch`` receives a list of items and must return a sequence with
    exactly one result per item, in the same order. It runs in worker threads
    owned by the batcher (``config.workers`` of them, one batch each), so it
    may block (a torch forward pass) without blocking the event loop.

    Use it from one event loop: ``await start()``, then ``await submit(item)``
    from any number of tasks, then ``await drain(timeout_s)`` on shutdown.
    """

    def __init__(
        self,
        predict_batch: Callable[[list[In]], Sequence[Out]],
        config: BatcherConfig | Mapping[str, Any] | None = None,
    ) -> None:
        self._predict_batch = predict_batch
        self.config = parse_batcher_config(config)
        self._max_wait_s = self.config.max_wait_ms / 1000

        self._queue: collections.deque[_Pending[In, Out]] = collections.deque()
        # Set whenever the collector may have something to do: an item arrived,
        # a batch finished or draining began.
        self._wake = asyncio.Event()
        self._draining = False
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task[None] | None = None
        # The batches running now, one per busy worker.
        self._in_flight: set[asyncio.Task[None]] = set()

        self._batches = 0
        self._items = 0
        self._last_batch_size = 0
        self._total_batch_s = 0.0
        self._recent_batch_s: collections.deque[float] = collections.deque(
            maxlen=_RECENT_BATCHES
        )

    async def start(self) -> None:
        """Start collecting batches on the running event loop.

        Raises RuntimeError if the batcher was already started.
        """
        if self._collector is not None:
            raise RuntimeError("MicroBatcher.start() was already called")
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.workers, thread_name_prefix="mlkit-batcher"
        )
        self._collector = asyncio.create_task(self._collect_forever())
        log.info(
            "micro-batcher started: max_batch_size=%s max_wait_ms=%s max_queue=%s "
            "workers=%s",
            self.config.max_batch_size,
            self.config.max_wait_ms,
            self.config.max_queue,
            self.config.workers,
        )

    async def submit(self, item: In) -> Out:
        """Queue ``item`` for the next batch and return its result.

        Raises QueueFull at once when ``max_queue`` items are already waiting,
        Draining after :meth:`drain` was called, BatchResultError when
        ``predict_batch`` returned the wrong number of results, and whatever
        ``predict_batch`` raised for the batch this item was in.
        """
        if self._draining:
            raise Draining()
        if self._collector is None:
            raise RuntimeError("call MicroBatcher.start() before submit()")
        depth = len(self._queue)
        if depth >= self.config.max_queue:
            raise QueueFull(depth, self.retry_after_s())

        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future))
        self._wake.set()
        return await future

    async def drain(self, timeout_s: float) -> None:
        """Refuse new items, finish every queued and running one, then stop.

        Raises TimeoutError if that takes longer than ``timeout_s``. The batcher
        then keeps draining in the background (new items are still refused), and
        calling drain again waits for the rest.
        """
        # Limitation: a thread cannot be stopped from outside, so a
        # predict_batch that never returns keeps its batch's callers waiting
        # and the process from exiting cleanly; drain can only report it.
        self._draining = True
        self._wake.set()
        if self._collector is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._collector), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"the batcher did not drain within {timeout_s} s: "
                f"{len(self._queue)} items queued, "
                f"{len(self._in_flight)} batch(es) running"
            ) from None

        if self._executor is not None:
            # The worker threads are idle by now, so this join is immediate.
            self._executor.shutdown(wait=True)
            self._executor = None
            log.info(
                "micro-batcher drained: %s batches, %s items",
                self._batches,
                self._items,
            )

    def stats(self) -> dict[str, float | int]:
        """Counters for metrics: queue depth, batches, items and batch timings."""
        return {
            "queue_depth": len(self._queue),
            "batches": self._batches,
            "items": self._items,
            "last_batch_size": self._last_batch_size,
            "mean_batch_size": self._items / self._batches if self._batches else 0.0,
            "mean_batch_ms": (
                1000 * self._total_batch_s / self._batches if self._batches else 0.0
            ),
        }

    def retry_after_s(self) -> float:
        """Seconds until the queue has likely room.

        The batches ahead (queued and running), shared among the workers, times
        the mean latency of recent batches.
        """
        if self._recent_batch_s:
            batch_s = sum(self._recent_batch_s) / len(self._recent_batch_s)
        else:
            batch_s = self._max_wait_s
        batches_ahead = math.ceil(len(self._queue) / self.config.max_batch_size)
        batches_ahead += len(self._in_flight)
        rounds = math.ceil(batches_ahead / self.config.workers)
        return max(rounds * batch_s, _MIN_RETRY_AFTER_S)

    @property
    def _busy(self) -> bool:
        """Every worker runs a batch: a new batch would have to wait."""
        return len(self._in_flight) >= self.config.workers

    def _take(self) -> _Pending[In, Out] | None:
        """The oldest queued item whose caller still waits, or None."""
        while self._queue:
            pending = self._queue.popleft()
            # A caller that gave up (client disconnected) is not worth a slot.
            if not pending.future.done():
                return pending
        return None

    async def _wait_wake(self, timeout_s: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def _collect(self) -> list[_Pending[In, Out]] | None:
        """The next batch, or None when draining and nothing is left."""
        while (first := self._take()) is None:
            if self._draining:
                return None
            await self._wait_wake(None)

        batch = [first]
        deadline = first.enqueued_at + self._max_wait_s
        while len(batch) < self.config.max_batch_size:
            pending = self._take()
            if pending is not None:
                batch.append(pending)
                continue

            # While every worker is busy the batch cannot run anyway, so keep
            # filling it; once a worker is free, send it at the deadline.
            if self._busy:
                timeout_s = None
            elif self._draining or time.perf_counter() >= deadline:
                break
            else:
                timeout_s = deadline - time.perf_counter()
            await self._wait_wake(timeout_s)
        return batch

    async def _collect_forever(self) -> None:
        try:
            while (batch := await self._collect()) is not None:
                while self._busy:
                    await self._wait_wake(None)
                task = asyncio.create_task(self._run(batch))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
        finally:
            # Normally the queue is empty here; if the collector was cancelled
            # or failed, nobody would ever answer the callers still queued.
            self._draining = True
            while (pending := self._take()) is not None:
                pending.future.cancel()
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A worker is free again: let the collector send the next batch."""
        self._in_flight.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # predict_batch's own errors reach the callers; this is the
            # batcher's machinery failing (say, its thread pool shut down).
            log.error("a batch could not run: %r", exc)

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        """Run one batch in a worker thread and hand each caller its result."""
        loop = asyncio.get_running_loop()
        items = [pending.item for pending in batch]
        try:
            outcome, seconds = await loop.run_in_executor(
                self._executor, self._predict, items
            )
        except BaseException:
            for pending in batch:
                pending.future.cancel()
            raise

        self._batches += 1
        self._items += len(batch)
        self._last_batch_size = len(batch)
        self._total_batch_s += seconds
        self._recent_batch_s.append(seconds)
        log.debug("batch of %s items took %.1f ms", len(batch), 1000 * seconds)

        for index, pending in enumerate(batch):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome[index])

    def _predict(self, items: list[In]) -> tuple[list[Out] | BaseException, float]:
        """Call ``predict_batch`` (in a worker thread); never raises."""
        start = time.perf_counter()
        try:
            results = self._predict_batch(items)
        except Exception as exc:
            log.warning(
                "predict_batch failed on a batch of %s items: %r", len(items), exc
            )
            return exc, time.perf_counter() - start
        seconds = time.perf_counter() - start

        try:
            results = list(results)
        except TypeError:
            return BatchResultError(
                f"predict_batch returned {type(results).__name__}, not a sequence; "
                "it must return a list with one result per item"
            ), seconds
        if len(results) != len(items):
            return BatchResultError(
                f"predict_batch returned {len(results)} results for a batch of "
                f"{len(items)} items; it must return exactly one result per item, "
                "in the same order"
            ), seconds
        return results, seconds
