"""Benchmark: one simulated hour of the HorizontalPodAutoscaler at 1 s steps.

Goal (issue: deployment and autoscaling): one simulated hour at 1 s steps in
under 1 s, so that a notebook can sweep HPA settings interactively.

The baseline is the same simulation at 0.1 s steps (ten times the steps): its
time is reported as a ratio, and its headline figures are compared with the
1 s run's, which shows what the coarser step costs in accuracy.

    python benchmarks/bench_autoscale.py              # 7 runs, median
    python benchmarks/bench_autoscale.py --repeat 3   # quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from mlkit.deploy.autoscale import HPASpec, PodModel, SimulationResult, simulate

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SECONDS = 1.0

# A CPU-bound pod like the inference server: 25 rps at 1.55 cores of a 2-core
# limit, 1-core request.
POD = PodModel(
    capacity_rps=25.0,
    base_latency_ms=120.0,
    cpu_per_rps=0.06,
    idle_cpu_cores=0.05,
    cpu_request_cores=1.0,
    cpu_limit_cores=2.0,
    max_queue=256,
)
HPA = HPASpec(min_replicas=2, max_replicas=30, target_cpu_utilization=60)
# An hour with a ramp to a plateau, a short burst, and a quiet end.
LOAD = [
    (0, 10),
    (300, 10),
    (600, 200),
    (2100, 200),
    (2160, 300),
    (2400, 300),
    (2700, 10),
    (3600, 10),
]


def run(step_s: float) -> tuple[float, SimulationResult]:
    started = time.perf_counter()
    result = simulate(LOAD, HPA, POD, {"duration_s": 3600, "step_s": step_s})
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=7, help="runs of each; the median is reported"
    )
    args = parser.parse_args()

    fast_times, slow_times = [], []
    for _ in range(args.repeat):
        seconds, fast = run(1.0)
        fast_times.append(seconds)
    for _ in range(max(1, args.repeat // 2)):
        seconds, slow = run(0.1)
        slow_times.append(seconds)
    fast_s = statistics.median(fast_times)
    slow_s = statistics.median(slow_times)

    result = {
        "simulated_s": 3600,
        "steps": len(fast.timeline),
        "seconds": round(fast_s, 4),
        "runs": [round(t, 4) for t in fast_times],
        "baseline_0_1s_steps_seconds": round(slow_s, 4),
        "baseline_ratio": round(slow_s / fast_s, 1),
        "summary_1s_steps": fast.summary(),
        "summary_0_1s_steps": slow.summary(),
        "cpu_count": os.cpu_count(),
        "goals": {"seconds": GOAL_SECONDS},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "autoscale.json").write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"1 s steps:   {fast_s:8.4f} s per simulated hour (median of "
        f"{args.repeat} runs: {result['runs']}; goal < {GOAL_SECONDS} s)"
    )
    print(
        f"0.1 s steps: {slow_s:8.4f} s per simulated hour, "
        f"{result['baseline_ratio']} x the 1 s run"
    )
    for name, summary in (("1 s", fast.summary()), ("0.1 s", slow.summary())):
        print(
            f"{name:>5} steps: up to {summary['max_replicas']} replicas, "
            f"{summary['dropped_fraction']:.2%} dropped, back at min "
            f"{summary['time_back_at_min_s']} s after the load ended"
        )
    met = fast_s < GOAL_SECONDS
    print("all goals met" if met else "GOALS NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
