"""Benchmark: the inference service on 2 cores, naive against micro-batched.

Goals (issue: inference service), all measured in one run with the same model:

- micro-batching (the server's defaults) serves at least 3x the requests per
  second of naive per-request inference at 32 concurrent requests. Naive is
  the same server with ``max_batch_size=1`` and one model worker: every
  request runs alone, at batch size 1, unpadded, one at a time on all cores,
  as a handler that calls the model itself would. A second naive server, one
  single-threaded worker per core (the server's default threading, without
  batching), is shown beside it to separate what batching gains from what the
  threading gains;
- the server's best throughput is at least 0.8x the offline limit: decode,
  prepare and ``Predictor.probabilities`` in batches of 32 in this process,
  no HTTP, with the server's threading (one single-threaded worker per core)
  and with one worker on all cores; the faster counts;
- at half of capacity (an open loop with Poisson arrivals at half the best
  micro-batched throughput) the p95 latency is at most 2x the single-request
  latency (p50 at concurrency 1). Beside it: the p95 an ideal server with
  the same batch costs would reach (``mlkit.serve.queueing``: a simulation
  of the batcher's discipline with no CPU spent outside batches), and the
  highest rate at which that ideal server still meets the goal, where the
  server is measured once more: to tell what the random arrivals alone
  cost from the server's own overhead;
- one server process with the default model stays under 1 GiB resident
  (VmRSS after loading, VmHWM after the load).

The default model is the architecture of the packaged ``full`` training config
(ResNet at 128 px, the pretrained all-MiniLM-L6-v2 text encoder), trained for
one epoch on synthetic demo data: the weights are barely trained, only speed
and memory are measured. The ``ci`` config's tiny model follows in a second
table, without goals. Requests are real JPEGs from the synthetic dataset with
their descriptions, sent as multipart uploads by the load generator, which
runs in this process and competes with the server for the same cores; its CPU
time and that of every other process on the machine are reported per level.
Every input is sent once before the levels, so texts come from the server's
cache, as in the offline limit; one extra run makes every text unique to show
what cache misses cost. Since the machine's speed drifts between those
sections, (a), (b) at concurrency 32 and (c) are then measured again in three
interleaved rounds with both servers up; the medians of each round's ratios
are shown beside the goals. Without goals, it also tries another ``max_wait_ms``,
fixed blocks of 4 (``model_block=4``) and one model worker on all cores
(``model_workers=1``), the server's earlier defaults. First it times the
vision backbone alone by batch size, as trained and as served (batch norms
folded, channels last), on one and on all cores: what batching can save in
model time on this CPU.

On a shared machine the figures move with the neighbours' load: two torch
threads on two cores slow down severalfold when another process takes a core.
The ``others`` column says how many cores other processes used meanwhile.

    python benchmarks/bench_serve.py                 # about 12 minutes
    python benchmarks/bench_serve.py --quick         # smoke run, about 4 minutes
    python benchmarks/bench_serve.py --model-dir DIR # reuse a trained model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from mlkit.data.manifest import read_manifest
from mlkit.data.prepare import PrepareConfig, prepare
from mlkit.data.synthetic import SynthConfig, generate
from mlkit.serve.config import IMAGE_FORMATS, ServeConfig
from mlkit.serve.loadtest import LoadReport, Payload, image_payloads, run_load_sync
from mlkit.serve.process import LocalServer
from mlkit.serve.queueing import BatchCost, SimulatedLatency, simulate

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_BATCHING_SPEEDUP = 3.0
GOAL_CONCURRENCY = 32
GOAL_SHARE_OF_OFFLINE = 0.8
GOAL_P95_OVER_SINGLE = 2.0
GOAL_RSS_BYTES = 1 << 30
OFFLINE_BATCH = 32
GIB = float(1 << 30)
# Other processes using more than this many cores during a measurement make
# its figures doubtful: torch's two threads then stall each other.
NOISY_CORES = 0.3
# (a): each request alone, at batch size 1, one at a time, on all cores.
NAIVE = {"max_batch_size": 1, "max_wait_ms": 0, "model_workers": 1}
# (a'): the same without the one-at-a-time: one single-threaded worker per core.
NAIVE_PER_CORE = {"max_batch_size": 1, "max_wait_ms": 0}


@dataclass(frozen=True)
class Plan:
    """How long and how hard each part of the run pushes."""

    samples: int
    max_inputs: int
    levels: tuple[int, ...]
    level_s: float
    warmup_s: float
    open_s: float
    offline_s: float
    sweep: tuple[dict[str, float], ...]
    sweep_levels: tuple[int, ...]
    ci_levels: tuple[int, ...]
    # Rounds of (a), (b) and (c) measured in turn, with both servers up.
    paired_rounds: int


FULL = Plan(
    samples=600,
    max_inputs=160,
    levels=(1, 8, 32, 64),
    level_s=8.0,
    warmup_s=2.0,
    open_s=15.0,
    offline_s=6.0,
    sweep=({"max_wait_ms": 5}, {"model_block": 4}, {"model_workers": 1}),
    sweep_levels=(1, 32),
    ci_levels=(1, 32),
    paired_rounds=3,
)
QUICK = Plan(
    samples=300,
    max_inputs=64,
    levels=(1, 32),
    level_s=3.0,
    warmup_s=1.0,
    open_s=4.0,
    offline_s=2.0,
    sweep=({"max_wait_ms": 5},),
    sweep_levels=(32,),
    ci_levels=(32,),
    paired_rounds=1,
)


# --- the machine ------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    # Steal is time the hypervisor gave to someone else: lost to us as well.
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid``, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def batch_counters(url: str) -> dict[str, float]:
    """Items, batches and model seconds the server has run so far (/metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0, trust_env=False).text
    names = {
        "mlkit_batch_size_sum": "items",
        "mlkit_batch_size_count": "batches",
        "mlkit_batch_duration_seconds_sum": "seconds",
    }
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            values[names[name]] = float(value)
    return values


# --- data and models --------------------------------------------------------


def build_data(root: Path, samples: int) -> tuple[Path, Path]:
    """Synthetic demo data and its prepared manifest, as the `ci` profile makes."""
    generate(root / "data", SynthConfig(n_samples=samples, seed=0))
    prepare(
        PrepareConfig(
            data_root=root / "data",
            out_dir=root / "prepared",
            min_samples_per_label=5,
            image_check="full",
            seed=0,
        )
    )
    return root / "data", root / "prepared"


def train_briefly(config: str, prepared: Path, out_dir: Path) -> tuple[Path, float]:
    """A model of the packaged ``config``, trained for one epoch; and the seconds."""
    from mlkit.train.run import TrainRunConfig, train_model

    run = TrainRunConfig.from_yaml(
        config,
        manifest=prepared,
        out_dir=out_dir,
        train={
            "epochs": 1,
            "num_workers": 0,
            "warmup_epochs": 0,
            "early_stopping_patience": None,
        },
    )
    started = time.perf_counter()
    result = train_model(run)
    return result.model_dir, time.perf_counter() - started


def request_inputs(
    data_root: Path, prepared: Path, limit: int
) -> tuple[list[Path], list[str]]:
    """Up to ``limit`` JPEG images of the prepared dataset with their descriptions.

    Drawn at random (seed 0) so every synthetic source is represented.
    """
    rows = read_manifest(prepared)
    rows = rows[rows["image_path"].str.lower().str.endswith((".jpg", ".jpeg"))]
    rows = rows.sample(n=min(limit, len(rows)), random_state=0)
    paths = [data_root / p for p in rows["image_path"]]
    return paths, rows["text"].fillna("").tolist()


def unique_texts(payload: Payload) -> Payload:
    """``payload`` with every text made unique, so the server's text cache misses."""

    def build(i: int) -> Mapping[str, Any]:
        request = dict(payload(i))
        data = dict(request.get("data", {}))
        data["text"] = f"{data.get('text', '')} (request {i})".strip()
        request["data"] = data
        return request

    return build


# --- measurements -----------------------------------------------------------


def offline_limit(
    model_dir: Path,
    paths: Sequence[Path],
    texts: Sequence[str],
    *,
    workers: int,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """Images per second of decode + prepare + probabilities in batches, no HTTP.

    ``workers`` threads each run whole batches of ``OFFLINE_BATCH`` uploads
    (decoded, prepared and predicted) with ``threads`` torch threads, as the
    server's model workers do, on one ``Predictor`` built as the server builds
    it. The upload bytes are read into memory first, as the server receives
    them; one pass fills the text cache and warms the kernels, as the server's
    priming pass does; then the workers run for ``seconds``.
    """
    import torch

    from mlkit.serve.config import Thresholds
    from mlkit.serve.images import decode_image
    from mlkit.serve.predictor import PredictJob, Predictor
    from mlkit.train.run import load_model

    config = ServeConfig()
    uploads = [p.read_bytes() for p in paths]
    batches = [
        (uploads[start : start + OFFLINE_BATCH], texts[start : start + OFFLINE_BATCH])
        for start in range(0, len(uploads), OFFLINE_BATCH)
    ]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        predictor = Predictor(load_model(model_dir), max_rows=config.max_batch_size)
        predictor.warm_up()

        def run_batch(batch: tuple[list[bytes], Sequence[str]]) -> int:
            jobs = []
            for data, text in zip(*batch, strict=True):
                image = decode_image(
                    data,
                    max_bytes=config.max_upload_bytes,
                    max_pixels=config.max_image_pixels,
                    formats=IMAGE_FORMATS,
                )
                jobs.append(
                    PredictJob(
                        predictor.prepare_image(image),
                        None,
                        text,
                        config.default_top_k,
                        Thresholds(),
                    )
                )
            predictor.probabilities(jobs)
            return len(jobs)

        for batch in batches:
            run_batch(batch)
        stop_at = time.perf_counter() + seconds

        def worker(rank: int) -> int:
            images, index = 0, rank
            while time.perf_counter() < stop_at:
                images += run_batch(batches[index % len(batches)])
                index += workers
            return images

        started = time.perf_counter()
        cpu_started, busy_started = time.process_time(), machine_busy_seconds()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = sum(pool.map(worker, range(workers)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        others = machine_busy_seconds() - busy_started - cpu
    finally:
        torch.set_num_threads(previous)
    return {
        "throughput_rps": round(images / elapsed, 2),
        "cores_used": round(cpu / elapsed, 2),
        "other_cores": round(max(others, 0.0) / elapsed, 2),
        "workers": workers,
        "torch_threads": threads,
        "batch_size": OFFLINE_BATCH,
    }


def offline_twice(
    model_dir: Path,
    paths: Sequence[Path],
    texts: Sequence[str],
    plan: Plan,
    between: Callable[[], Any],
) -> tuple[dict[str, Any], Any]:
    """The offline limit measured before and after ``between()``; the best counts.

    Each time with the server's threading (one single-threaded worker per
    core) and with one worker on all cores. Two measurements apart in time,
    because a neighbour that takes a core for a while slows torch down
    severalfold; the best is the limit. Returns the offline result and what
    ``between`` returned.
    """
    cpus = len(os.sched_getaffinity(0))
    schemes = {
        f"{cpus} workers x 1 thread": (cpus, 1),
        f"1 worker x {cpus} threads": (1, cpus),
    }
    print(f"\n(c) offline limit: batches of {OFFLINE_BATCH}, no HTTP")
    runs = []

    def run(when: str) -> None:
        for name, (workers, threads) in schemes.items():
            runs.append(
                offline_limit(
                    model_dir,
                    paths,
                    texts,
                    workers=workers,
                    threads=threads,
                    seconds=plan.offline_s,
                )
            )
            print(
                f"  {when}, {name}: {runs[-1]['throughput_rps']:.1f} images/s "
                f"(others {runs[-1]['other_cores']:.2f} cores)",
                flush=True,
            )

    run("first")
    value = between()
    run("again")
    best = max(runs, key=lambda r: r["throughput_rps"])
    result = {**best, "runs": runs, "runs_rps": [r["throughput_rps"] for r in runs]}
    result["runs_other_cores"] = [r["other_cores"] for r in runs]
    return result, value


def measure(
    server: LocalServer,
    profile: Mapping[str, Any],
    payload: Payload,
    *,
    label: str,
) -> dict[str, Any]:
    """One load run against ``server`` and who used the CPU meanwhile.

    ``client_cores`` is this process (the load generator), ``server_cores``
    the server, ``other_cores`` every other process on the machine: noise.
    ``model_busy`` is the share of the time the server's model was computing a
    batch; ``mean_batch_ms`` how long a batch took.
    """
    model0 = batch_counters(server.url)
    server0, client0, busy0 = (
        server.cpu_seconds(),
        time.process_time(),
        machine_busy_seconds(),
    )
    report: LoadReport = run_load_sync(server.url, profile, payload)
    server_cpu = server.cpu_seconds() - server0
    client_cpu = time.process_time() - client0
    busy = machine_busy_seconds() - busy0
    model = {k: v - model0[k] for k, v in batch_counters(server.url).items()}
    batches = max(model["batches"], 1.0)

    elapsed = report.elapsed_s
    summary = report.to_dict()
    row = {
        "label": label,
        "level": report.profile.peak_level,
        "mode": report.profile.mode,
        "requests": report.requests,
        "ok": report.ok,
        "errors": report.errors,
        "elapsed_s": round(elapsed, 2),
        "throughput_rps": round(report.throughput, 2),
        "p50_ms": summary["p50_ms"],
        "p95_ms": summary["p95_ms"],
        "p99_ms": summary["p99_ms"],
        "mean_batch": round(model["items"] / batches, 2),
        "mean_batch_ms": round(1000 * model["seconds"] / batches, 1),
        "model_busy": round(model["seconds"] / elapsed, 2),
        "server_cores": round(server_cpu / elapsed, 2),
        "client_cores": round(client_cpu / elapsed, 2),
        "other_cores": round(max(busy - server_cpu - client_cpu, 0.0) / elapsed, 2),
    }
    print(format_row(row), flush=True)
    return row


def closed(concurrency: int, seconds: float) -> dict[str, Any]:
    return {
        "mode": "closed",
        "concurrency": concurrency,
        "duration_s": seconds,
        "timeout_s": 60.0,
    }


def poisson(rate: float, seconds: float) -> dict[str, Any]:
    """An open loop: Poisson arrivals at ``rate`` per second."""
    return {
        "mode": "open",
        "rate": rate,
        "duration_s": seconds,
        "timeout_s": 60.0,
        "max_connections": 256,
    }


def prime(server: LocalServer, payload: Payload, n_inputs: int) -> None:
    """Send every input once: the server's text cache then holds every text."""
    run_load_sync(
        server.url,
        {"mode": "closed", "concurrency": 8, "max_requests": n_inputs},
        payload,
    )


def closed_levels(
    server: LocalServer,
    payload: Payload,
    levels: Sequence[int],
    plan: Plan,
    label: str,
) -> list[dict[str, Any]]:
    """Closed loops at each level, each after a short unmeasured warm-up."""
    rows = []
    for level in levels:
        run_load_sync(server.url, closed(level, plan.warmup_s), payload)
        rows.append(measure(server, closed(level, plan.level_s), payload, label=label))
    return rows


def start_server(
    model_dir: Path, settings: Mapping[str, Any], log_dir: Path, name: str
) -> LocalServer:
    server = LocalServer(model_dir, settings=settings, log_file=log_dir / f"{name}.log")
    started = time.perf_counter()
    server.start(timeout_s=300.0)
    print(
        f"  [{name}: ready in {time.perf_counter() - started:.1f} s, pid {server.pid}]",
        flush=True,
    )
    return server


# --- output -----------------------------------------------------------------

HEADER = (
    f"{'run':<26} {'level':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
    f"{'p99 ms':>8} {'batch':>5} {'ms/b':>6} {'busy':>5} {'errors':>6} "
    f"{'server':>6} {'client':>6} {'others':>6}"
)


def format_row(row: Mapping[str, Any]) -> str:
    level = (
        f"c={row['level']:g}" if row["mode"] == "closed" else f"{row['level']:.0f}/s"
    )

    def ms(value: float | None) -> str:
        return f"{value:8.1f}" if value is not None else f"{'-':>8}"

    return (
        f"{row['label']:<26} {level:>6} {row['throughput_rps']:7.1f} "
        f"{ms(row['p50_ms'])} {ms(row['p95_ms'])} {ms(row['p99_ms'])} "
        f"{row['mean_batch']:5.1f} {row['mean_batch_ms']:6.1f} "
        f"{row['model_busy']:5.2f} {row['requests'] - row['ok']:6d} "
        f"{row['server_cores']:6.2f} {row['client_cores']:6.2f} "
        f"{row['other_cores']:6.2f}"
    )


def print_table(title: str, rows: Sequence[Mapping[str, Any]]) -> None:
    print(f"\n{title}")
    print(HEADER)
    for row in rows:
        print(format_row(row))


def at_level(rows: Sequence[Mapping[str, Any]], level: int) -> Mapping[str, Any]:
    return next(r for r in rows if r["mode"] == "closed" and r["level"] == level)


# --- the parts of the run ---------------------------------------------------


def bench_default_model(
    model_dir: Path,
    paths: list[Path],
    texts: list[str],
    plan: Plan,
    log_dir: Path,
) -> dict[str, Any]:
    """Offline limit around naive and micro-batched servers; then other settings."""
    payload = image_payloads(paths, texts)
    offline, result = offline_twice(
        model_dir,
        paths,
        texts,
        plan,
        lambda: naive_and_batched(model_dir, payload, len(paths), plan, log_dir),
    )
    result["offline"] = offline
    best = offline["workers"], offline["torch_threads"]
    result["paired"] = paired_rounds(
        model_dir, paths, texts, payload, plan, log_dir, best
    )

    sweep = []
    if plan.sweep:
        print(f"\nother settings for (b), at concurrency {list(plan.sweep_levels)}")
        print(HEADER)
    for settings in plan.sweep:
        name = ", ".join(f"{k}={v:g}" for k, v in settings.items())
        with start_server(model_dir, settings, log_dir, name) as server:
            prime(server, payload, len(paths))
            label = f"(b) {name}"
            rows = closed_levels(server, payload, plan.sweep_levels, plan, label)
        sweep.extend({**r, "settings": settings} for r in rows)
    result["settings_sweep"] = sweep
    return result


def naive_and_batched(
    model_dir: Path, payload: Payload, n_inputs: int, plan: Plan, log_dir: Path
) -> dict[str, Any]:
    """(a) and (b) at every level, then (b)'s open loop, text misses and memory."""
    defaults = ServeConfig()
    result: dict[str, Any] = {}

    # With max_batch_size=1 the server runs each request alone at batch size 1,
    # unpadded (its model block is 1): what a naive per-request server does.
    print("\n(a) naive: " + ", ".join(f"{k}={v}" for k, v in NAIVE.items()))
    print(HEADER)
    with start_server(model_dir, NAIVE, log_dir, "naive") as server:
        prime(server, payload, n_inputs)
        result["naive"] = closed_levels(server, payload, plan.levels, plan, "(a) naive")
    print(
        "\n(a') naive, one single-threaded worker per core: "
        + ", ".join(f"{k}={v}" for k, v in NAIVE_PER_CORE.items())
    )
    print(HEADER)
    with start_server(model_dir, NAIVE_PER_CORE, log_dir, "naive-per-core") as server:
        prime(server, payload, n_inputs)
        result["naive_per_core"] = closed_levels(
            server, payload, plan.sweep_levels, plan, "(a') naive, worker/core"
        )

    label = f"(b) batched, wait {defaults.max_wait_ms:g} ms"
    print(
        f"\n(b) micro-batched, the server's defaults: max_batch_size="
        f"{defaults.max_batch_size}, max_wait_ms={defaults.max_wait_ms:g}"
    )
    print(HEADER)
    with start_server(model_dir, {}, log_dir, "batched") as server:
        memory_loaded = proc_memory(server.pid)
        prime(server, payload, n_inputs)
        batched = closed_levels(server, payload, plan.levels, plan, label)
        capacity = max(r["throughput_rps"] for r in batched)
        open_row = measure(
            server,
            poisson(round(capacity / 2, 2), plan.open_s),
            payload,
            label="(b) open loop, capacity/2",
        )
        limit = queueing_limit(batched, open_row["level"], defaults)
        # Where random arrivals alone would still allow the goal: what is
        # left above it there is the server's own overhead.
        feasible_row = measure(
            server,
            poisson(limit["p95_goal_holds_up_to_rps"], plan.open_s),
            payload,
            label="(b) open, ideal's goal rate",
        )
        misses = measure(
            server,
            closed(GOAL_CONCURRENCY, plan.level_s),
            unique_texts(payload),
            label="(b) unique texts, no cache",
        )
        memory_after = proc_memory(server.pid)
    return {
        **result,
        "batched": batched,
        "capacity_rps": capacity,
        "open_loop": open_row,
        "queueing_limit": limit,
        "open_loop_at_ideal_goal_rate": feasible_row,
        "text_cache_misses": misses,
        "memory": {
            "rss_after_load_bytes": memory_loaded["VmRSS"],
            "rss_after_traffic_bytes": memory_after["VmRSS"],
            "peak_rss_bytes": memory_after["VmHWM"],
        },
        "defaults": {
            "max_batch_size": defaults.max_batch_size,
            "max_wait_ms": defaults.max_wait_ms,
            "model_workers": defaults.model_threads()[0],
            "torch_threads": defaults.model_threads()[1],
        },
    }


def queueing_limit(
    batched: Sequence[Mapping[str, Any]], rate: float, defaults: ServeConfig
) -> dict[str, Any]:
    """The open loop's latency for an ideal server with (b)'s batch costs.

    The cost of a batch is fitted to (b)'s closed loops (mean batch size and
    milliseconds per batch at each level); a request's cost outside the model
    is the single-request p50 less its batch. ``mlkit.serve.queueing`` then
    simulates Poisson arrivals at the open loop's rate through the server's
    batching settings, with no CPU spent outside batches: what the random
    arrivals alone cost, the floor under the measured p95. Also the highest
    rate at which that ideal server keeps p95 within the goal.
    """
    single = at_level(batched, 1)
    cost = BatchCost.fit({r["mean_batch"]: r["mean_batch_ms"] / 1000 for r in batched})
    overhead_s = max(single["p50_ms"] - single["mean_batch_ms"], 0.0) / 1000
    workers = defaults.model_threads()[0]
    bound_s = GOAL_P95_OVER_SINGLE * single["p50_ms"] / 1000

    def run(at: float, requests: int = 200_000) -> SimulatedLatency:
        return simulate(
            at,
            cost,
            workers=workers,
            max_batch_size=defaults.max_batch_size,
            max_wait_s=defaults.max_wait_ms / 1000,
            overhead_s=overhead_s,
            requests=requests,
        )

    capacity = cost.capacity_rps(workers, defaults.max_batch_size)
    # The ideal p95 grows with the rate: bisect for where it meets the goal.
    low, high = 0.0, capacity * 0.999
    for _ in range(20):
        middle = (low + high) / 2
        if run(middle, requests=50_000).p95_s <= bound_s:
            low = middle
        else:
            high = middle
    at_rate = run(rate) if rate < capacity else None
    limit = {
        "batch_fixed_ms": round(1000 * cost.fixed_s, 2),
        "batch_per_item_ms": round(1000 * cost.per_item_s, 2),
        "overhead_ms": round(1000 * overhead_s, 2),
        "workers": workers,
        "capacity_rps": round(capacity, 1),
        "rate_rps": rate,
        "p50_ms": None if at_rate is None else round(1000 * at_rate.p50_s, 1),
        "p95_ms": None if at_rate is None else round(1000 * at_rate.p95_s, 1),
        "mean_batch": None if at_rate is None else round(at_rate.mean_batch, 2),
        "utilization": None if at_rate is None else round(at_rate.utilization, 2),
        "p95_goal_holds_up_to_rps": round(low, 1),
    }
    p95 = "-" if at_rate is None else f"{limit['p95_ms']:.1f}"
    print(
        f"  queueing limit (simulated, batch = {limit['batch_fixed_ms']:.1f} + "
        f"{limit['batch_per_item_ms']:.1f} ms x size, {limit['overhead_ms']:.1f} ms "
        f"outside the model, {workers} workers): p95 {p95} ms at {rate:g}/s; "
        f"p95 <= {GOAL_P95_OVER_SINGLE:g}x single up to {low:.1f} req/s",
        flush=True,
    )
    return limit


def paired_rounds(
    model_dir: Path,
    paths: Sequence[Path],
    texts: Sequence[str],
    payload: Payload,
    plan: Plan,
    log_dir: Path,
    offline_scheme: tuple[int, int],
) -> dict[str, Any]:
    """(a) and (b) at concurrency 32 and (c), in turn, ``plan.paired_rounds`` times.

    The machine's speed drifts by a fifth or more over minutes, and the
    sections above measure (a), (b) and (c) minutes apart. Here both servers
    stay up (the idle one uses no CPU) and each round measures the three
    within about half a minute; each round gives its own ratios, and the
    medians over the rounds are shown beside the goals. (c) runs with the
    threading (workers, threads) that was best above.
    """
    workers, threads = offline_scheme
    print(
        f"\npaired rounds: (a) and (b) at c={GOAL_CONCURRENCY}, then (c) with "
        f"{workers} worker(s) x {threads} thread(s), {plan.paired_rounds} times"
    )
    print(HEADER)
    rounds = []
    with (
        start_server(model_dir, NAIVE, log_dir, "paired-naive") as naive,
        start_server(model_dir, {}, log_dir, "paired-batched") as batched,
    ):
        prime(naive, payload, len(paths))
        prime(batched, payload, len(paths))
        for number in range(1, plan.paired_rounds + 1):
            rows = {}
            for key, server in (("naive", naive), ("batched", batched)):
                run_load_sync(
                    server.url, closed(GOAL_CONCURRENCY, plan.warmup_s), payload
                )
                rows[key] = measure(
                    server,
                    closed(GOAL_CONCURRENCY, plan.level_s),
                    payload,
                    label=f"round {number} ({'a' if key == 'naive' else 'b'})",
                )
            offline = offline_limit(
                model_dir,
                paths,
                texts,
                workers=workers,
                threads=threads,
                seconds=plan.offline_s,
            )
            print(f"  round {number} (c): {offline['throughput_rps']:.1f} images/s")
            a, b = rows["naive"]["throughput_rps"], rows["batched"]["throughput_rps"]
            c = offline["throughput_rps"]
            rounds.append(
                {
                    **rows,
                    "offline": offline,
                    "b_over_a": round(b / a, 3) if a else math.nan,
                    "b_over_c": round(b / c, 3) if c else math.nan,
                }
            )
    return {
        "rounds": rounds,
        "median_b_over_a": statistics.median(r["b_over_a"] for r in rounds),
        "median_b_over_c": statistics.median(r["b_over_c"] for r in rounds),
    }


def bench_ci_model(
    model_dir: Path,
    paths: list[Path],
    texts: list[str],
    plan: Plan,
    log_dir: Path,
) -> dict[str, Any]:
    """The tiny `ci` model: offline limit, naive and micro-batched; no goals."""
    payload = image_payloads(paths, texts)
    print("\n`ci` model")

    def servers() -> dict[str, Any]:
        print(HEADER)
        rows = []
        for name, settings, label in (
            ("ci-naive", NAIVE, "(a) naive"),
            ("ci-batched", {}, "(b) batched, defaults"),
        ):
            with start_server(model_dir, settings, log_dir, name) as server:
                prime(server, payload, len(paths))
                rows.extend(closed_levels(server, payload, plan.ci_levels, plan, label))
                memory = proc_memory(server.pid)
        return {"rows": rows, "memory_batched_server": memory}

    offline, result = offline_twice(model_dir, paths, texts, plan, servers)
    return {"offline": offline, **result}


# --- goals ------------------------------------------------------------------


def noise_cores(result: Mapping[str, Any]) -> dict[str, float]:
    """Cores that other processes used during each measurement: mean and max."""
    rows = [
        *result["naive"],
        *result["naive_per_core"],
        *result["batched"],
        result["open_loop"],
        result["open_loop_at_ideal_goal_rate"],
        result["text_cache_misses"],
        *result["settings_sweep"],
        *result.get("ci_model", {}).get("rows", []),
        *(r[k] for r in result["paired"]["rounds"] for k in ("naive", "batched")),
    ]
    cores = [r["other_cores"] for r in rows] + result["offline"]["runs_other_cores"]
    cores += [r["offline"]["other_cores"] for r in result["paired"]["rounds"]]
    return {"mean": round(sum(cores) / len(cores), 2), "max": max(cores)}


def check_goals(
    result: Mapping[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, float | None]]:
    """Each goal: the measured figure, the bound, and whether it was met;
    and figures shown beside the goals."""
    naive = at_level(result["naive"], GOAL_CONCURRENCY)
    batched = at_level(result["batched"], GOAL_CONCURRENCY)
    single = at_level(result["batched"], 1)
    offline = result["offline"]["throughput_rps"]
    rss = result["memory"]["peak_rss_bytes"]

    def ratio(a: float | None, b: float | None) -> float:
        return a / b if a is not None and b else math.nan

    goals = {
        "batching_speedup_at_32": {
            "value": ratio(batched["throughput_rps"], naive["throughput_rps"]),
            "goal": f">= {GOAL_BATCHING_SPEEDUP}",
        },
        "best_over_offline": {
            "value": ratio(result["capacity_rps"], offline),
            "goal": f">= {GOAL_SHARE_OF_OFFLINE}",
        },
        "p95_half_capacity_over_single": {
            "value": ratio(result["open_loop"]["p95_ms"], single["p50_ms"]),
            "goal": f"<= {GOAL_P95_OVER_SINGLE}",
        },
        "server_memory_gib": {"value": rss / GIB, "goal": "<= 1"},
    }
    # Not a goal: what batching gains over a naive server with the same
    # threading, one single-threaded worker per core.
    per_core = [r for r in result["naive_per_core"] if r["level"] == GOAL_CONCURRENCY]
    informative = {
        "batching_speedup_at_32_vs_naive_per_core": round(
            ratio(batched["throughput_rps"], per_core[0]["throughput_rps"]), 3
        )
        if per_core
        else None,
        # The same ratios measured in interleaved rounds (see paired_rounds).
        "paired_batching_speedup_at_32": result["paired"]["median_b_over_a"],
        "paired_batched_over_offline": result["paired"]["median_b_over_c"],
        # The open loop's p95 for an ideal server (see queueing_limit): the
        # part of the measured p95 that the random arrivals alone cost.
        "p95_half_capacity_over_single_queueing_limit": ratio(
            result["queueing_limit"]["p95_ms"], single["p50_ms"]
        ),
        "p95_goal_rate_queueing_limit_over_capacity": ratio(
            result["queueing_limit"]["p95_goal_holds_up_to_rps"],
            result["capacity_rps"],
        ),
        # The measured p95 at that rate.
        "p95_at_that_rate_over_single": ratio(
            result["open_loop_at_ideal_goal_rate"]["p95_ms"], single["p50_ms"]
        ),
    }
    bounds = {
        "batching_speedup_at_32": lambda v: v >= GOAL_BATCHING_SPEEDUP,
        "best_over_offline": lambda v: v >= GOAL_SHARE_OF_OFFLINE,
        "p95_half_capacity_over_single": lambda v: v <= GOAL_P95_OVER_SINGLE,
        "server_memory_gib": lambda v: v * GIB <= GOAL_RSS_BYTES,
    }
    for name, goal in goals.items():
        check: Callable[[float], bool] = bounds[name]
        goal["value"] = round(goal["value"], 3)
        goal["met"] = not math.isnan(goal["value"]) and check(goal["value"])
    # The open loop must also have been answered: errors there void the p95.
    if result["open_loop"]["ok"] < result["open_loop"]["requests"]:
        goals["p95_half_capacity_over_single"]["met"] = False
    return goals, informative


def print_summary(
    result: Mapping[str, Any],
    goals: Mapping[str, Any],
    informative: Mapping[str, Any],
) -> None:
    print_table(
        "default model (`full` architecture), closed loops, then the open loop",
        [
            *result["naive"],
            *result["naive_per_core"],
            *result["batched"],
            result["open_loop"],
            result["open_loop_at_ideal_goal_rate"],
            result["text_cache_misses"],
            *result["settings_sweep"],
        ],
    )
    memory = result["memory"]
    print(
        f"offline limit (c): {result['offline']['throughput_rps']:.1f} images/s "
        f"(runs: {result['offline']['runs_rps']}); capacity (best of b): "
        f"{result['capacity_rps']:.1f} req/s"
    )
    paired = result["paired"]["rounds"]
    print(
        f"paired rounds: (b)/(a) {[r['b_over_a'] for r in paired]}, (b)/(c) "
        f"{[r['b_over_c'] for r in paired]}"
    )
    print(
        f"server memory: {memory['rss_after_load_bytes'] / GIB:.2f} GiB after "
        f"loading, {memory['rss_after_traffic_bytes'] / GIB:.2f} GiB after the "
        f"load, peak {memory['peak_rss_bytes'] / GIB:.2f} GiB"
    )
    if "ci_model" in result:
        ci = result["ci_model"]
        print_table(
            f"`ci` model (tiny; make report deploys it): offline limit "
            f"{ci['offline']['throughput_rps']:.1f} images/s (runs: "
            f"{ci['offline']['runs_rps']}), server peak RSS "
            f"{ci['memory_batched_server']['VmHWM'] / GIB:.2f} GiB",
            ci["rows"],
        )
    print(
        "\ncolumns: batch = mean model batch, ms/b = milliseconds per batch, "
        "busy = share of the time the model computed; server/client/others = "
        "CPU cores used by the server, this process (the load generator) and "
        "every other process on the machine (noise)"
    )
    noise = result["noise_other_cores"]
    print(
        f"noise: other processes used {noise['mean']:.2f} cores on average, "
        f"{noise['max']:.2f} at most, during the measurements"
        + ("; the figures are doubtful" if noise["max"] > NOISY_CORES else "")
    )
    print("\ngoals")
    for name, goal in goals.items():
        verdict = "PASS" if goal["met"] else "FAIL"
        print(f"  {verdict}  {name:<32} {goal['value']:8.3f}  (goal {goal['goal']})")
    for name, value in informative.items():
        shown = "-" if value is None else f"{value:.3f}"
        print(f"  info  {name:<32} {shown:>8}")


def backbone_batch_costs(
    model_dir: Path, sizes: Sequence[int] = (1, 2, 4, 8, 16), seconds: float = 2.0
) -> dict[str, dict[int, float]]:
    """Milliseconds per image of the vision backbone alone, by batch size.

    As trained (``model.backbone``) and as the server runs it (batch norms
    folded, channels last), on one torch thread (a model worker's) and on all
    cores. What batching can save in model time on this CPU, before any server
    cost: the ceiling of naive-against-batched for a compute-bound model.
    """
    import torch

    from mlkit.serve.predictor import Predictor
    from mlkit.train.run import load_model

    predictor = Predictor(load_model(model_dir), block_size=1)
    model = predictor.model
    size = predictor.card["image"]["size"]
    images = torch.randn(max(sizes), 3, size, size)
    forwards = {"trained": model.backbone, "served": predictor._vision_forward}
    cpus = len(os.sched_getaffinity(0))
    previous = torch.get_num_threads()
    costs: dict[str, dict[int, float]] = {}
    try:
        for threads in sorted({1, cpus}):
            torch.set_num_threads(threads)
            for name, forward in forwards.items():
                key = f"{name}, {threads} thread{'s' if threads > 1 else ''}"
                costs[key] = {}
                with torch.inference_mode():
                    for batch in sizes:
                        forward(images[:batch])
                        started, done = time.perf_counter(), 0
                        while time.perf_counter() - started < seconds:
                            forward(images[:batch])
                            done += batch
                        elapsed = time.perf_counter() - started
                        costs[key][batch] = round(1000 * elapsed / done, 2)
                print(
                    f"backbone {key}, ms per image by batch size: "
                    + ", ".join(f"{b}: {ms}" for b, ms in costs[key].items()),
                    flush=True,
                )
    finally:
        torch.set_num_threads(previous)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--model-dir", type=Path, help="reuse this model directory (default model)"
    )
    parser.add_argument("--no-ci", action="store_true", help="skip the `ci` model")
    parser.add_argument(
        "--batch-costs",
        action="store_true",
        help="only time the backbone by batch size (needs --model-dir)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.batch_costs:
        if args.model_dir is None:
            parser.error("--batch-costs needs --model-dir")
        backbone_batch_costs(args.model_dir)
        return 0
    plan = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        data_root, prepared = build_data(tmp, plan.samples)
        paths, texts = request_inputs(data_root, prepared, plan.max_inputs)
        print(
            f"{len(paths)} distinct JPEG uploads with their texts, from "
            f"{plan.samples} synthetic samples; {os.cpu_count()} CPUs, load "
            f"average before {load_before[0]:.2f}"
        )

        train_s = None
        model_dir = args.model_dir
        if model_dir is None:
            model_dir, train_s = train_briefly("full", prepared, tmp / "full")
            print(f"trained the `full` architecture for 1 epoch in {train_s:.0f} s")
        print(
            "the weights are barely trained (1 epoch, synthetic data): only "
            "speed and memory are measured"
        )

        costs = backbone_batch_costs(model_dir, seconds=0.5 if args.quick else 1.5)
        result = bench_default_model(model_dir, paths, texts, plan, tmp)
        result["backbone_ms_per_image"] = costs
        result["model_dir"] = str(args.model_dir) if args.model_dir else "(trained)"
        result["train_seconds"] = None if train_s is None else round(train_s, 1)
        if not args.no_ci:
            ci_dir, _ = train_briefly("ci", prepared, tmp / "ci")
            result["ci_model"] = bench_ci_model(ci_dir, paths, texts, plan, tmp)

    goals, informative = check_goals(result)
    result.update(
        noise_other_cores=noise_cores(result),
        plan=asdict(plan),
        quick=args.quick,
        distinct_inputs=len(paths),
        cpu_count=os.cpu_count(),
        load_average_before=round(load_before[0], 2),
        load_average_after=round(os.getloadavg()[0], 2),
        wall_seconds=round(time.perf_counter() - started, 1),
        goals=goals,
        informative=informative,
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=2) + "\n")

    print_summary(result, goals, informative)
    met = all(goal["met"] for goal in goals.values())
    print(
        f"\nwall time {result['wall_seconds']:.0f} s; load average before "
        f"{load_before[0]:.2f}, after {result['load_average_after']:.2f}"
    )
    print("all goals met" if met else "GOALS NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
