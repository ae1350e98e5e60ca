from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from pydantic import ValidationError

from mlkit.errors import ConfigError, MlkitError
from mlkit.serve import (
    BatcherConfig,
    BatchResultError,
    Draining,
    MicroBatcher,
    QueueFull,
    parse_batcher_config,
)


def double(xs: list[float]) -> list[float]:
    return [x * 2 for x in xs]


class Recorder:
    """A predict_batch that records its batch sizes and can sleep or block."""

    def __init__(self, sleep_s: float = 0.0, release: threading.Event | None = None):
        self.sleep_s = sleep_s
        self.release = release
        self.sizes: list[int] = []
        self.started = threading.Event()

    def __call__(self, xs: list[int]) -> list[int]:
        self.sizes.append(len(xs))
        self.started.set()
        if self.release is not None:
            assert self.release.wait(5), "test never released predict_batch"
        time.sleep(self.sleep_s)
        return [x * 2 for x in xs]


async def until(condition, timeout_s: float = 2.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        assert time.perf_counter() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def submit_all(predict, config: BatcherConfig, items: list) -> tuple[list, dict]:
    """Submit every item at once to a new batcher: the results and its stats."""

    async def main():
        batcher = MicroBatcher(predict, config)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(x) for x in items))
        await batcher.drain(timeout_s=2)
        return results, batcher.stats()

    return asyncio.run(main())


def test_results_equal_one_at_a_time_results():
    numbers = [random.Random(i).uniform(-1e6, 1e6) for i in range(100)]

    results, stats = submit_all(double, BatcherConfig(max_batch_size=8), numbers)
    assert results == [double([x])[0] for x in numbers]
    assert stats["items"] == 100
    assert stats["batches"] < 100


def test_batches_form_under_load_and_respect_max_batch_size():
    recorder = Recorder(sleep_s=0.02)

    config = BatcherConfig(max_batch_size=8, max_wait_ms=5)
    results, stats = submit_all(recorder, config, list(range(50)))
    assert results == [2 * i for i in range(50)]
    assert max(recorder.sizes) > 1
    assert max(recorder.sizes) <= 8
    assert sum(recorder.sizes) == 50
    assert stats["batches"] == len(recorder.sizes)
    assert stats["mean_batch_size"] == pytest.approx(50 / len(recorder.sizes))
    assert stats["mean_batch_ms"] >= 20
    assert stats["queue_depth"] == 0


def test_max_wait_bounds_latency_of_a_lone_request():
    async def main():
        batcher = MicroBatcher(double, BatcherConfig(max_wait_ms=5))
        await batcher.start()
        start = time.perf_counter()
        result = await batcher.submit(21)
        elapsed = time.perf_counter() - start
        await batcher.drain(timeout_s=2)
        return result, elapsed

    result, elapsed = asyncio.run(main())
    assert result == 42
    assert elapsed < 0.2


def test_queue_full_while_worker_is_blocked_and_accepted_items_succeed():
    release = threading.Event()
    recorder = Recorder(release=release)

    async def main():
        config = BatcherConfig(max_batch_size=2, max_wait_ms=0, max_queue=3)
        batcher = MicroBatcher(recorder, config)
        await batcher.start()

        # The first item occupies the worker; two more fill the next batch
        # being collected; three more fill the queue.
        first = asyncio.create_task(batcher.submit(0))
        await until(recorder.started.is_set)
        accepted = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)  # let both submits enqueue
        await until(lambda: batcher.stats()["queue_depth"] == 0)
        accepted += [asyncio.create_task(batcher.submit(i)) for i in (3, 4, 5)]
        await until(lambda: batcher.stats()["queue_depth"] == 3)

        with pytest.raises(QueueFull) as caught:
            await batcher.submit(99)

        release.set()
        results = await asyncio.gather(first, *accepted)
        await batcher.drain(timeout_s=2)
        return caught.value, results

    error, results = asyncio.run(main())
    assert isinstance(error, MlkitError)
    assert error.retry_after_s > 0
    assert "queue is full" in str(error)
    assert results == [0, 2, 4, 6, 8, 10]
    assert max(recorder.sizes) <= 2


def test_exception_reaches_every_caller_of_the_batch_and_serving_continues():
    fail = threading.Event()
    fail.set()

    def predict(xs: list[int]) -> list[int]:
        if fail.is_set():
            time.sleep(0.02)  # let the whole batch gather
            raise ValueError("model exploded")
        return [x + 1 for x in xs]

    async def main():
        config = BatcherConfig(max_batch_size=10, max_wait_ms=20)
        batcher = MicroBatcher(predict, config)
        await batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(5)), return_exceptions=True
        )
        fail.clear()
        after = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.drain(timeout_s=2)
        return outcomes, after

    outcomes, after = asyncio.run(main())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert all("model exploded" in str(o) for o in outcomes)
    assert after == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("predict", "message"),
    [
        (lambda xs: xs[:-1], "results for a batch of"),
        (lambda xs: xs + xs, "results for a batch of"),
        (lambda xs: None, "not a sequence"),
    ],
)
def test_wrong_result_count_is_a_clear_error_for_every_caller(predict, message):
    async def main():
        batcher = MicroBatcher(predict, BatcherConfig(max_wait_ms=20))
        await batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        await batcher.drain(timeout_s=2)
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(o, BatchResultError) for o in outcomes)
    assert all(message in str(o) for o in outcomes)


def test_drain_finishes_queued_items_and_rejects_new_ones():
    release = threading.Event()
    recorder = Recorder(release=release)

    async def main():
        config = BatcherConfig(max_batch_size=4, max_wait_ms=1)
        batcher = MicroBatcher(recorder, config)
        await batcher.start()
        queued = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await until(recorder.started.is_set)

        draining = asyncio.create_task(batcher.drain(timeout_s=2))
        await asyncio.sleep(0)
        with pytest.raises(Draining):
            await batcher.submit(99)

        release.set()
        await draining
        return [task.result() for task in queued], batcher.stats()

    results, stats = asyncio.run(main())
    assert results == [2 * i for i in range(10)]
    assert stats["items"] == 10
    assert stats["queue_depth"] == 0


def test_drain_times_out_when_predict_batch_hangs():
    release = threading.Event()
    recorder = Recorder(release=release)

    async def main():
        batcher = MicroBatcher(recorder, BatcherConfig(max_wait_ms=0))
        await batcher.start()
        stuck = asyncio.create_task(batcher.submit(1))
        await until(recorder.started.is_set)

        start = time.perf_counter()
        with pytest.raises(TimeoutError, match="did not drain within"):
            await batcher.drain(timeout_s=0.05)
        waited = time.perf_counter() - start

        # Still draining: new items are refused, and once the model returns
        # the stuck caller gets its answer and a second drain completes.
        with pytest.raises(Draining):
            await batcher.submit(2)
        release.set()
        await batcher.drain(timeout_s=2)
        return waited, await stuck

    waited, result = asyncio.run(main())
    assert waited < 1
    assert result == 2


def test_event_loop_keeps_running_while_a_batch_computes():
    ticks: list[float] = []

    async def heartbeat(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    async def main():
        batcher = MicroBatcher(Recorder(sleep_s=0.1), BatcherConfig(max_wait_ms=0))
        await batcher.start()
        stop = asyncio.Event()
        beating = asyncio.create_task(heartbeat(stop))
        start = time.perf_counter()
        await batcher.submit(1)
        end = time.perf_counter()
        stop.set()
        await beating
        await batcher.drain(timeout_s=2)
        return [t for t in ticks if start <= t <= end]

    during = asyncio.run(main())
    # A blocked loop would tick once; 100 ms at 5 ms per tick gives ~20.
    assert len(during) >= 5


class Overlap:
    """A predict_batch that records how many of its calls ever ran at once."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()

    def __call__(self, xs: list[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.sleep_s)
        with self.lock:
            self.running -= 1
        return [x * 2 for x in xs]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_bound_how_many_batches_run_at_once(workers):
    overlap = Overlap(sleep_s=0.02)

    config = BatcherConfig(max_batch_size=2, max_wait_ms=0, workers=workers)
    results, stats = submit_all(overlap, config, list(range(40)))
    assert results == [2 * i for i in range(40)]
    assert stats["items"] == 40
    assert overlap.most == workers
    assert len(overlap.threads) == workers


def test_several_workers_drain_every_running_batch():
    release = threading.Event()
    recorder = Recorder(release=release)

    async def main():
        config = BatcherConfig(max_batch_size=2, max_wait_ms=0, workers=2)
        batcher = MicroBatcher(recorder, config)
        await batcher.start()
        queued = [asyncio.create_task(batcher.submit(i)) for i in range(9)]
        await until(lambda: len(recorder.sizes) == 2)
        # Two batches hold both workers; the rest waits in the queue.
        retry_after = batcher.retry_after_s()
        draining = asyncio.create_task(batcher.drain(timeout_s=2))
        await asyncio.sleep(0.01)
        assert not draining.done()
        release.set()
        await draining
        return [task.result() for task in queued], retry_after

    results, retry_after = asyncio.run(main())
    assert results == [2 * i for i in range(9)]
    assert sum(recorder.sizes) == 9
    assert retry_after > 0


def test_retry_after_shares_the_batches_ahead_among_the_workers():
    async def main(workers: int) -> float:
        release = threading.Event()
        recorder = Recorder(release=release)
        config = BatcherConfig(
            max_batch_size=1, max_wait_ms=100, max_queue=100, workers=workers
        )
        batcher = MicroBatcher(recorder, config)
        await batcher.start()
        # One batch per worker runs, the collector holds the next one.
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(9 + workers)]
        await until(lambda: len(recorder.sizes) == workers)
        await until(lambda: batcher.stats()["queue_depth"] == 8)
        # No batch has finished yet, so a batch is assumed to take max_wait.
        seconds = batcher.retry_after_s()
        release.set()
        await asyncio.gather(*tasks)
        await batcher.drain(timeout_s=2)
        return seconds

    # Eight queued and one running per worker, max_wait 0.1 s per batch.
    assert asyncio.run(main(1)) == pytest.approx(0.9)
    assert asyncio.run(main(2)) == pytest.approx(0.5)


def test_submit_before_start_is_an_error():
    batcher = MicroBatcher(double)
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(batcher.submit(1))


def test_start_twice_is_an_error():
    async def main():
        batcher = MicroBatcher(double)
        await batcher.start()
        try:
            await batcher.start()
        finally:
            await batcher.drain(timeout_s=1)

    with pytest.raises(RuntimeError, match="already"):
        asyncio.run(main())


def test_config_defaults():
    config = BatcherConfig()
    assert (
        config.max_batch_size,
        config.max_wait_ms,
        config.max_queue,
        config.workers,
    ) == (16, 5.0, 256, 1)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"max_wait_ms": float("inf")}, "max_wait_ms"),
        ({"max_queue": 0}, "max_queue"),
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
        ({"max_queue_size": 10}, "max_queue_size: unknown key"),
    ],
)
def test_invalid_config_names_the_field(data, field):
    with pytest.raises(ValidationError):
        BatcherConfig(**data)
    with pytest.raises(ConfigError, match=field):
        parse_batcher_config(data, source="serve.yaml")
    with pytest.raises(ConfigError, match=field):
        MicroBatcher(double, data)


def test_parse_config_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping, got int"):
        parse_batcher_config(3)
