"""The scaling demo: measure one server, calibrate the simulator, tell the story.

The story the demo shows: a quiet service at its minimum scale, a load ramp
that one pod cannot carry, the HorizontalPodAutoscaler adding pods, and, once
the load is gone, the pods removed only after the scale-down stabilization
window. Locally, :func:`measure_capacity` pushes the real server
(:class:`mlkit.serve.process.LocalServer`) at increasing concurrency, and
:func:`calibrate_for_objects` turns that curve into the simulator's pod model
with the CPU request and limit of the Deployment that would run it; on a
cluster, :func:`plot_cluster_vs_simulation` sets the real HPA, as
``Cluster.sample`` recorded it, against the simulator's prediction.

Everything here returns tables and matplotlib figures for a notebook to show.
The figures come from ``pyplot.subplots`` (so that ``plt.show()`` displays
them, as in mlkit's other notebooks) and are drawn with the axes' own methods
only: no pyplot state is read and no rcParams are changed. Close a figure with
``plt.close(fig)`` once shown.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd

from mlkit.deploy.autoscale import (
    HPASpec,
    PodModel,
    SimulationConfig,
    SimulationResult,
    calibrate_pod,
    hpa_spec_from_object,
)
from mlkit.errors import ConfigError, DataError, validate_config

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mlkit.serve.loadtest import LoadProfile, LoadReport, Payload

log = logging.getLogger(__name__)

__all__ = [
    "CAPACITY_COLUMNS",
    "PHASE_COLUMNS",
    "PHASE_NAMES",
    "MeasuredServer",
    "calibrate_for_objects",
    "cpu_at_capacity_pct",
    "demo_load_profile",
    "find_object",
    "hpa_settings_table",
    "measure_capacity",
    "phases",
    "plot_capacity_curve",
    "plot_cluster_vs_simulation",
    "plot_scaling_timeline",
    "rps_at_target",
]

# The columns of measure_capacity's table; the first three and cpu_cores are
# what calibrate_pod reads.
CAPACITY_COLUMNS = (
    "concurrency",
    "throughput_rps",
    "p50_ms",
    "p95_ms",
    "errors",
    "requests",
    "cpu_cores",
    "loadgen_cpu_cores",
    "machine_busy",
    "rss_mib",
    "wall_s",
)

PHASE_NAMES = ("quiet", "ramp", "peak", "cool-down", "scaled-down")
PHASE_COLUMNS = (
    "phase",
    "start_s",
    "end_s",
    "duration_s",
    "offered_rps",
    "served_rps",
    "dropped",
    "replicas_min",
    "replicas_max",
    "desired_max",
    "utilization_pct",
    "utilization_max_pct",
    "latency_ms",
    "latency_max_ms",
)
_PHASE_COLORS = {
    "quiet": "#d9d9d9",
    "ramp": "#fdd0a2",
    "peak": "#fcae91",
    "cool-down": "#c6dbef",
    "scaled-down": "#c7e9c0",
}

# What the controller needs past the stabilization window before it may act:
# one sync to see it expire and one to be safe (the default sync is 15 s).
_SCALE_DOWN_SLACK_S = 30.0
# Share of the machine's CPUs above which a capacity measurement is taken to
# measure the machine rather than the server.
_MACHINE_BOUND = 0.9
# The cluster sample's columns that plot_cluster_vs_simulation reads.
_SAMPLE_REQUIRED = ("time_s", "ready_replicas", "desired_replicas", "cpu_utilization")
_MIB = 1024 * 1024


class MeasuredServer(Protocol):
    """What :func:`measure_capacity` needs of a server: its base URL and the
    CPU seconds its process has used so far (``LocalServer`` has both, and
    ``rss_bytes()``, which is read when present)."""

    url: str

    def cpu_seconds(self) -> float: ...


# --- measuring ---------------------------------------------------------------


def measure_capacity(
    server: MeasuredServer,
    payload: Payload,
    levels: Sequence[int] = (1, 2, 4, 8, 16, 32),
    seconds_per_level: float = 6.0,
    warmup_s: float = 2.0,
    *,
    timeout_s: float = 30.0,
) -> pd.DataFrame:
    """The server's capacity curve: closed-loop load at each concurrency level.

    Each level first runs ``warmup_s`` unmeasured (the batcher's queue fills,
    caches warm), then ``seconds_per_level`` measured. One row per level, in
    the order given, columns :data:`CAPACITY_COLUMNS`: ``throughput_rps``
    (successful requests per second), ``p50_ms``/``p95_ms`` (latency of the
    successful requests, NaN when none succeeded), ``errors`` and
    ``requests`` (counts of the measured run), ``cpu_cores`` (the server's
    CPU seconds used during the measured run over its wall seconds,
    ``wall_s``), ``loadgen_cpu_cores`` (the same for this process, which
    generates the load), ``machine_busy`` (the share of the machine's CPU
    time that anything used, from /proc/stat; NaN elsewhere) and ``rss_mib``
    (the server's resident memory after the level, NaN when the server cannot
    tell). The table is what :func:`mlkit.deploy.autoscale.calibrate_pod`
    reads.

    Raises ConfigError for an empty or invalid level, or a duration the load
    generator refuses, before any request is sent. Failed requests are counted,
    not raised; a level where some failed is logged as a warning.

    Limitation: the load generator runs on the same machine as the server and
    takes CPU from it, so on a small machine the curve flattens earlier than a
    pod's would, and the server's CPU stops growing with its throughput; other
    work on a shared machine does the same. When the machine's CPUs were
    nearly all busy, a warning names the levels: their figures describe the
    machine, not the server. Start the server with the pod's CPU limit as its
    ``torch_threads`` so that it parallelizes as the pod would.
    """
    from mlkit.serve.loadtest import parse_load_profile, run_load_sync

    levels = _check_levels(levels)
    if not (seconds_per_level > 0 and math.isfinite(seconds_per_level)):
        raise ConfigError(
            f"measure_capacity: seconds_per_level must be a positive number of "
            f"seconds, got {seconds_per_level!r}"
        )
    if not (warmup_s >= 0 and math.isfinite(warmup_s)):
        raise ConfigError(
            f"measure_capacity: warmup_s must be 0 or more seconds, got {warmup_s!r}"
        )
    # Every profile is validated before the first request: a bad level found
    # after minutes of measuring would waste them.
    plans = []
    for level in levels:
        runs = {"measure": seconds_per_level}
        if warmup_s > 0:
            runs = {"warm-up": warmup_s, **runs}
        plans.append(
            (
                level,
                {
                    name: parse_load_profile(
                        {
                            "mode": "closed",
                            "concurrency": level,
                            "duration_s": seconds,
                            "timeout_s": timeout_s,
                        },
                        source=f"measure_capacity level {level} ({name})",
                    )
                    for name, seconds in runs.items()
                },
            )
        )

    rss = getattr(server, "rss_bytes", None)
    rows = []
    # The runs go to a worker thread, as run_load_sync does by itself under a
    # notebook's event loop. Here it is for Python 3.11, which loses trace
    # events after the asyncio cancellations a run makes (CPython issue
    # 106749): in the calling thread, coverage would miss the rest of this
    # function.
    with ThreadPoolExecutor(max_workers=1) as runner:

        def run(profile: LoadProfile) -> LoadReport:
            return runner.submit(run_load_sync, server.url, profile, payload).result()

        for level, profiles in plans:
            if "warm-up" in profiles:
                run(profiles["warm-up"])

            cpu_before = server.cpu_seconds()
            loadgen_before = time.process_time()
            machine_before = _machine_cpu_ticks()
            started = time.perf_counter()
            report = run(profiles["measure"])
            wall = time.perf_counter() - started
            cpu_used = server.cpu_seconds() - cpu_before
            loadgen = time.process_time() - loadgen_before
            row = _capacity_row(level, report, (cpu_used, loadgen), wall, rss)
            row["machine_busy"] = _busy_share(machine_before, _machine_cpu_ticks())
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(CAPACITY_COLUMNS))

    ours = frame["cpu_cores"] + frame["loadgen_cpu_cores"]
    busy = (ours >= _MACHINE_BOUND * _machine_cpus()) | (
        frame["machine_busy"] >= _MACHINE_BOUND
    )
    if busy.any():
        log.warning(
            "at concurrency %s this machine's CPUs were %s busy (server and load "
            "generator: %s cores of %d): those levels measure the machine, not "
            "the server; measure on a larger or quieter machine, or calibrate "
            "with cpu='saturating'",
            ", ".join(str(c) for c in frame.loc[busy, "concurrency"]),
            ", ".join(f"{b:.0%}" for b in frame.loc[busy, "machine_busy"]),
            ", ".join(f"{c:.2f}" for c in ours[busy]),
            _machine_cpus(),
        )
    return frame


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _machine_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, None without
    /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):  # pragma: no cover - not on Linux
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def _busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    if before is None or after is None or after[1] <= before[1]:
        return math.nan
    return (after[0] - before[0]) / (after[1] - before[1])


def _capacity_row(
    level: int,
    report: LoadReport,
    cpu_seconds: tuple[float, float],
    wall: float,
    rss: Any,
) -> dict[str, Any]:
    """One level's row; ``cpu_seconds`` is (server, load generator)."""

    failed = report.requests - report.ok
    if failed:
        log.warning(
            "concurrency %d: %d of %d requests failed: %s",
            level,
            failed,
            report.requests,
            report.errors,
        )
    row = {
        "concurrency": level,
        "throughput_rps": report.throughput,
        "p50_ms": report.p50_ms,
        "p95_ms": report.p95_ms,
        "errors": failed,
        "requests": report.requests,
        "cpu_cores": cpu_seconds[0] / wall,
        "loadgen_cpu_cores": cpu_seconds[1] / wall,
        "rss_mib": rss() / _MIB if callable(rss) else math.nan,
        "wall_s": wall,
    }
    log.info(
        "concurrency %d: %.1f rps, p50 %.1f ms, %.2f cores",
        level,
        row["throughput_rps"],
        row["p50_ms"],
        row["cpu_cores"],
    )
    return row


def _check_levels(levels: Sequence[int]) -> list[int]:
    values = list(levels)
    if not values:
        raise ConfigError("measure_capacity: levels is empty; give e.g. (1, 2, 4, 8)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(
                f"measure_capacity: levels must be whole numbers of requests in "
                f"flight, got {value!r}"
            )
        if value < 1:
            raise ConfigError(
                f"measure_capacity: levels must be at least 1, got {value!r}"
            )
    return [int(v) for v in values]


def find_object(objects: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of ``kind`` among ``objects`` (``build_objects``' list).

    Raises ConfigError when there is none or more than one.
    """
    found = [obj for obj in objects if obj.get("kind") == kind]
    if len(found) != 1:
        kinds = ", ".join(str(obj.get("kind")) for obj in objects) or "nothing"
        raise ConfigError(
            f"expected exactly one {kind} among the objects, found {len(found)} "
            f"(the objects are: {kinds}); pass mlkit.deploy.build_objects(config)"
        )
    return dict(found[0])


def calibrate_for_objects(
    measurements: pd.DataFrame,
    objects: Sequence[Mapping[str, Any]],
    *,
    cpu: Literal["measured", "saturating"] = "measured",
) -> PodModel:
    """The simulator's pod model for the pods that ``objects`` would run.

    The capacity curve (:func:`measure_capacity`) gives capacity and latency;
    the Deployment's first container gives the CPU request (what the HPA's
    utilization is a percent of) and limit, the ConfigMap the server's queue
    length (``MLKIT_SERVE_MAX_QUEUE``, default 256). ``cpu`` says where CPU
    per request comes from: ``measured``, a line fitted to the curve's
    ``cpu_cores``; ``saturating``, the assumption that a pod uses its whole
    CPU limit at capacity (the right one for a CPU-bound server measured on a
    machine too small to show it).

    When the objects hold the HorizontalPodAutoscaler and a pod at capacity
    stays below its CPU target, a warning says that the HPA would never scale
    up. Raises ConfigError when the objects lack a Deployment or a CPU
    request, or ``cpu`` is unknown, DataError for an unusable curve (see
    ``calibrate_pod``).
    """
    if cpu not in ("measured", "saturating"):
        raise ConfigError(
            f"calibrate_for_objects: cpu must be 'measured' or 'saturating', "
            f"got {cpu!r}"
        )
    from mlkit.deploy.config import parse_quantity

    deployment = find_object(objects, "Deployment")
    try:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise ConfigError(
            "Deployment: spec.template.spec.containers[0] is missing; pass "
            "mlkit.deploy.build_objects(config)"
        ) from exc
    resources = container.get("resources") or {}
    request = (resources.get("requests") or {}).get("cpu")
    limit = (resources.get("limits") or {}).get("cpu")
    if request is None:
        raise ConfigError(
            f"Deployment container {container.get('name')!r} has no "
            "resources.requests.cpu; the HPA's CPU utilization needs one"
        )

    max_queue = 256
    config_maps = [obj for obj in objects if obj.get("kind") == "ConfigMap"]
    for config_map in config_maps:
        value = (config_map.get("data") or {}).get("MLKIT_SERVE_MAX_QUEUE")
        if value is not None:
            max_queue = int(value)
    if cpu == "saturating":
        measurements = measurements.drop(columns=["cpu_cores"], errors="ignore")
    pod = calibrate_pod(
        measurements,
        float(parse_quantity(request)),
        None if limit is None else float(parse_quantity(limit)),
        max_queue=max_queue,
    )

    autoscalers = [o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"]
    if len(autoscalers) == 1:
        hpa = hpa_spec_from_object(autoscalers[0])
        at_capacity = cpu_at_capacity_pct(pod)
        if at_capacity < hpa.target_cpu_utilization:
            log.warning(
                "at its capacity of %.1f requests/s a pod uses %.0f %% of its CPU "
                "request, below the HPA's target of %d %%: the HPA would never "
                "add a pod; if the measurement was short of CPU, calibrate with "
                "cpu='saturating'",
                pod.effective_capacity_rps,
                at_capacity,
                hpa.target_cpu_utilization,
            )
    return pod


# --- the load of the story ---------------------------------------------------


def demo_load_profile(
    capacity_rps: float,
    *,
    quiet_fraction: float = 0.05,
    peak_factor: float = 3.0,
    quiet_s: float = 120.0,
    ramp_s: float = 180.0,
    hold_s: float = 300.0,
    drop_s: float = 30.0,
    cool_down_s: float | None = None,
    scale_down_window_s: float = 300.0,
) -> list[tuple[float, float]]:
    """Requests per second over time for the scaling story, as
    ``(seconds, rps)`` points to interpolate linearly.

    ``capacity_rps`` is what one pod serves (``PodModel.effective_capacity_rps``).
    The load is quiet at ``quiet_fraction`` of it for ``quiet_s``, ramps over
    ``ramp_s`` to ``peak_factor`` times it, holds for ``hold_s``, falls back
    to quiet over ``drop_s``, and stays quiet for ``cool_down_s``: by default
    ``scale_down_window_s`` (the HPA's scale-down stabilization window) plus
    five minutes, so that the scale-down and some time at the minimum scale are
    seen. A ``cool_down_s`` that does not outlast the window is accepted with a
    warning: the profile then ends before the HPA may remove a pod.

    The points are a load input of ``autoscale.simulate`` and, for a real
    cluster, the ``ramp`` of an open-loop ``LoadProfile`` (mode "open",
    ``duration_s`` the last point's time). Raises ConfigError for a
    non-positive capacity or duration, or a quiet level at or above the peak.
    """
    durations = {
        "quiet_s": quiet_s,
        "ramp_s": ramp_s,
        "hold_s": hold_s,
        "drop_s": drop_s,
        "scale_down_window_s": scale_down_window_s,
    }
    if cool_down_s is None:
        cool_down_s = scale_down_window_s + 300.0
    durations["cool_down_s"] = cool_down_s
    for name, value in {"capacity_rps": capacity_rps, **durations}.items():
        zero_ok = name == "scale_down_window_s"
        if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            raise ConfigError(
                f"demo_load_profile: {name} must be a "
                f"{'non-negative' if zero_ok else 'positive'} number, got {value!r}"
            )
    if not (math.isfinite(peak_factor) and peak_factor > 0):
        raise ConfigError(
            f"demo_load_profile: peak_factor must be positive, got {peak_factor!r}"
        )
    if not (0 <= quiet_fraction < peak_factor):
        raise ConfigError(
            f"demo_load_profile: quiet_fraction must be at least 0 and below "
            f"peak_factor {peak_factor}, got {quiet_fraction!r}"
        )
    if cool_down_s <= scale_down_window_s + _SCALE_DOWN_SLACK_S:
        log.warning(
            "cool_down_s %.0f s does not outlast the scale-down window of %.0f s "
            "plus two syncs: the profile ends before the HPA may remove a pod",
            cool_down_s,
            scale_down_window_s,
        )

    quiet = quiet_fraction * capacity_rps
    peak = peak_factor * capacity_rps
    times = np.cumsum([0.0, quiet_s, ramp_s, hold_s, drop_s, cool_down_s])
    levels = [quiet, quiet, peak, peak, quiet, quiet]
    return [(float(t), float(v)) for t, v in zip(times, levels, strict=True)]


# --- tables ------------------------------------------------------------------


def _as_hpa_spec(hpa: HPASpec | Mapping[str, Any]) -> HPASpec:
    """An HPASpec from itself, an autoscaling/v2 object, or HPASpec fields."""
    if isinstance(hpa, HPASpec):
        return hpa
    if isinstance(hpa, Mapping) and "spec" in hpa:
        return hpa_spec_from_object(hpa)
    return validate_config(
        HPASpec, hpa, what="HPA spec", source="scaling", empty_ok=False
    )


def _policies(rules: Any) -> str:
    if rules.select_policy == "Disabled":
        return "disabled"
    parts = [
        f"{p.value} {'pods' if p.type == 'Pods' else '%'} per {p.period_seconds} s"
        for p in rules.policies
    ]
    if len(parts) == 1:
        return parts[0]
    which = "larger" if rules.select_policy == "Max" else "smaller"
    return f"{' or '.join(parts)}, the {which} change"


def _scale_down_window_s(hpa: HPASpec, config: SimulationConfig | None) -> float:
    if hpa.behavior is not None:
        return float(hpa.behavior.scale_down.stabilization_window_seconds)
    return (config or SimulationConfig()).downscale_stabilization_s


def _cores(value: float) -> str:
    return f"{value:g} core" + ("" if value == 1 else "s")


def cpu_at_capacity_pct(pod: PodModel) -> float:
    """CPU of a pod serving at its capacity, in percent of its request: the
    most CPU utilization the HPA can see."""
    return pod.cpu_cores(pod.effective_capacity_rps) / pod.cpu_request_cores * 100


def rps_at_target(hpa: HPASpec, pod: PodModel) -> float:
    """Requests per second one pod serves when its CPU is at the HPA's target
    (capped at what it can serve); the load the HPA keeps each pod near."""
    cores = hpa.target_cpu_utilization / 100 * pod.cpu_request_cores
    if pod.cpu_per_rps == 0:
        return pod.effective_capacity_rps
    return min(
        pod.effective_capacity_rps,
        max(0.0, cores - pod.idle_cpu_cores) / pod.cpu_per_rps,
    )


def hpa_settings_table(
    hpa: HPASpec | Mapping[str, Any],
    pod: PodModel | None = None,
    config: SimulationConfig | None = None,
) -> pd.DataFrame:
    """The autoscaling settings a demo ran with, one row each, for display.

    ``hpa`` is the HorizontalPodAutoscaler object as deployed (a dict from
    ``build_objects``), or an HPASpec. With ``pod`` the calibrated pod model
    is added (capacity, latency, CPU per request, and the load one pod takes at
    the CPU target), with ``config`` the simulation's timing (pod start-up,
    sync period). Indexed by (section, setting); the one column ``value``
    holds readable text with units. Raises ConfigError for an HPA object the
    simulator cannot read.
    """
    spec = _as_hpa_spec(hpa)
    rows: list[tuple[str, str, str]] = [
        ("HPA", "min replicas", str(spec.min_replicas)),
        ("HPA", "max replicas", str(spec.max_replicas)),
        ("HPA", "CPU target", f"{spec.target_cpu_utilization} % of the CPU request"),
    ]
    if spec.behavior is None:
        rows += [
            ("HPA", "scale-up", "no behavior: up to max(2 x current, 4) per sync"),
            (
                "HPA",
                "scale-down stabilization window",
                f"{_scale_down_window_s(spec, config):g} s",
            ),
            ("HPA", "scale-down", "no behavior: no rate limit"),
        ]
    else:
        up, down = spec.behavior.scale_up, spec.behavior.scale_down
        rows += [
            (
                "HPA",
                "scale-up stabilization window",
                f"{up.stabilization_window_seconds} s",
            ),
            ("HPA", "scale-up policies", _policies(up)),
            (
                "HPA",
                "scale-down stabilization window",
                f"{down.stabilization_window_seconds} s",
            ),
            ("HPA", "scale-down policies", _policies(down)),
        ]

    if pod is not None:
        capacity = f"{pod.effective_capacity_rps:.1f} requests/s"
        if pod.effective_capacity_rps < pod.capacity_rps:
            capacity += f" (CPU limit; measured {pod.capacity_rps:.1f})"
        limit = (
            "no limit"
            if pod.cpu_limit_cores is None
            else f"limit {_cores(pod.cpu_limit_cores)}"
        )
        rows += [
            ("pod", "capacity", capacity),
            ("pod", "latency unloaded", f"{pod.base_latency_ms:.1f} ms"),
            (
                "pod",
                "CPU per request/s",
                f"{pod.cpu_per_rps * 1000:.1f} millicores "
                f"(+ {pod.idle_cpu_cores * 1000:.0f} idle)",
            ),
            ("pod", "CPU", f"request {_cores(pod.cpu_request_cores)}, {limit}"),
            (
                "pod",
                "CPU at capacity",
                f"{cpu_at_capacity_pct(pod):.0f} % of the request",
            ),
            ("pod", "queue", f"{pod.max_queue} requests"),
            (
                "pod",
                "load at the CPU target",
                f"{rps_at_target(spec, pod):.1f} requests/s per pod"
                + (
                    " (its capacity: the target is never reached)"
                    if cpu_at_capacity_pct(pod) < spec.target_cpu_utilization
                    else ""
                ),
            ),
        ]
    if config is not None:
        rows += [
            (
                "simulation",
                "pod start-up",
                f"{config.pod_startup_s:g} s (of which pending "
                f"{config.pod_pending_s:g} s)",
            ),
            ("simulation", "HPA sync period", f"{config.sync_period_s:g} s"),
            ("simulation", "metric window", f"{config.metric_window_s:g} s"),
            ("simulation", "tolerance", f"{config.tolerance:.0%}"),
        ]
    index = pd.MultiIndex.from_tuples(
        [(section, setting) for section, setting, _ in rows],
        names=["section", "setting"],
    )
    return pd.DataFrame({"value": [value for *_, value in rows]}, index=index)


def _profile_points(profile: Sequence[Sequence[float]]) -> tuple[np.ndarray, ...]:
    try:
        points = np.asarray(profile, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(
            "load profile is not numeric", expected="(seconds, rps) points"
        ) from exc
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise DataError(
            "load profile has the wrong shape",
            expected="(seconds, rps) points, as demo_load_profile returns",
            got=f"an array of shape {points.shape}",
        )
    times, rps = points[:, 0], points[:, 1]
    if not np.all(np.isfinite(points)) or np.any(np.diff(times) <= 0):
        raise DataError(
            "load profile points must be finite, in strictly increasing time",
            got=str(times.tolist()[:10]),
        )
    return times, rps


def phases(
    result: SimulationResult, profile: Sequence[Sequence[float]]
) -> pd.DataFrame:
    """The phases of the story in a simulation of ``profile``, with what the
    deployment did in each.

    From the profile's points: ``quiet`` until the rise to the peak begins,
    ``ramp`` until the peak load, ``peak`` while the load stays there,
    ``cool-down`` from the load's fall until the deployment is back at
    ``min_replicas`` with nothing starting, for good, and ``scaled-down`` from
    then to the end. A phase of no length is left out: ``scaled-down`` when
    the deployment never got back to its minimum (a warning says so). Meant for
    one-hump profiles such as :func:`demo_load_profile`'s; with several humps
    at the peak level, ``peak`` spans the valleys between them.

    One row per phase, columns :data:`PHASE_COLUMNS`: times in seconds, mean
    offered and served requests/s, requests dropped, ready replicas (min and
    max), the most replicas the HPA asked for, a serving pod's CPU in percent
    of its request (mean and max), and the latency estimate (mean and max).
    Raises DataError for profile points that are not ``(seconds, rps)`` pairs
    in increasing time.
    """
    times, rps = _profile_points(profile)
    frame = result.timeline
    t = frame["time_s"].to_numpy()
    end = float(t[-1] + result.config.step_s)

    at_peak = np.flatnonzero(rps == rps.max())
    first, last = at_peak[0], at_peak[-1]
    rise = first
    while rise > 0 and rps[rise - 1] < rps[rise]:
        rise -= 1
    ramp_start, peak_start, peak_end = times[rise], times[first], times[last]

    at_min = (frame["replicas"].to_numpy() == result.hpa.min_replicas) & (
        frame["starting_pods"].to_numpy() == 0
    )
    not_at_min = np.flatnonzero(~at_min)
    back = 0 if len(not_at_min) == 0 else not_at_min[-1] + 1
    if back < len(frame):
        scaled_down = max(float(t[back]), peak_end)
    else:
        scaled_down = end
        log.warning(
            "the deployment was not back at %d replicas by the end of the "
            "simulation (%.0f s); lengthen the quiet time after the load",
            result.hpa.min_replicas,
            end,
        )
    bounds = zip(
        PHASE_NAMES,
        (0.0, ramp_start, peak_start, peak_end, scaled_down),
        (ramp_start, peak_start, peak_end, scaled_down, end),
        strict=True,
    )

    rows = []
    for name, start, stop in bounds:
        start, stop = max(0.0, float(start)), min(end, float(stop))
        selected = frame[(t >= start) & (t < stop)]
        if selected.empty:
            continue
        utilization = selected["utilization"] * 100
        rows.append(
            {
                "phase": name,
                "start_s": start,
                "end_s": stop,
                "duration_s": stop - start,
                "offered_rps": selected["offered_rps"].mean(),
                "served_rps": selected["served_rps"].mean(),
                "dropped": selected["dropped"].sum(),
                "replicas_min": int(selected["replicas"].min()),
                "replicas_max": int(selected["replicas"].max()),
                "desired_max": int(selected["desired_replicas"].max()),
                "utilization_pct": utilization.mean(),
                "utilization_max_pct": utilization.max(),
                "latency_ms": selected["latency_ms_estimate"].mean(),
                "latency_max_ms": selected["latency_ms_estimate"].max(),
            }
        )
    return pd.DataFrame(rows, columns=list(PHASE_COLUMNS))


# --- plots -------------------------------------------------------------------


def plot_capacity_curve(measurements: pd.DataFrame) -> Figure:
    """The capacity curve: throughput (with the server's CPU cores on a twin
    axis) and p50/p95 latency against concurrency, concurrency on a log2
    scale. Raises DataError when ``measurements`` lacks concurrency,
    throughput_rps or p50_ms; p95_ms and cpu_cores are drawn when present."""
    import matplotlib.pyplot as plt

    _require(measurements, ("concurrency", "throughput_rps", "p50_ms"), "capacity")
    curve = measurements.sort_values("concurrency")
    x = curve["concurrency"].to_numpy(dtype=float)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(x, curve["throughput_rps"], marker="o", label="throughput")
    left.set_xlabel("concurrency (requests in flight)")
    left.set_ylabel("requests / s")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    handles, labels = left.get_legend_handles_labels()
    if "cpu_cores" in curve and curve["cpu_cores"].notna().any():
        cpu_axis = left.twinx()
        cpu_axis.plot(
            x,
            curve["cpu_cores"],
            marker="s",
            color="tab:red",
            linestyle="--",
            label="server CPU",
        )
        cpu_axis.set_ylabel("CPU cores")
        cpu_axis.set_ylim(bottom=0)
        more_handles, more_labels = cpu_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    left.legend(handles, labels, loc="lower right")

    right.plot(x, curve["p50_ms"], marker="o", label="p50")
    if "p95_ms" in curve:
        right.plot(x, curve["p95_ms"], marker="^", label="p95")
    right.set_xlabel("concurrency (requests in flight)")
    right.set_ylabel("latency (ms)")
    right.set_ylim(bottom=0)
    right.set_title("Latency")
    right.legend(loc="upper left")

    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(x, [f"{v:g}" for v in x])
        axis.grid(True, alpha=0.3)
    fig.suptitle("Capacity of one server (closed-loop load)")
    fig.tight_layout()
    return fig


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise DataError(f"{what} table is empty", expected="one row per measurement")
    for column in columns:
        if column not in frame:
            raise DataError(
                f"{what} table lacks a column",
                column=column,
                expected=", ".join(columns),
                got=", ".join(map(str, frame.columns)),
            )


def _settings_title(hpa: HPASpec, pod: PodModel, config: SimulationConfig) -> str:
    line = (
        f"HPA: {hpa.min_replicas}-{hpa.max_replicas} replicas, CPU target "
        f"{hpa.target_cpu_utilization} % of the {_cores(pod.cpu_request_cores)} "
        "request, "
        f"scale-down window {_scale_down_window_s(hpa, config):g} s"
    )
    if hpa.behavior is not None:
        line += f", scale-up {_policies(hpa.behavior.scale_up)}"
    pod_line = (
        f"pod: {pod.effective_capacity_rps:.1f} requests/s at most, "
        f"{rps_at_target(hpa, pod):.1f} at the target, ready "
        f"{config.pod_startup_s:g} s after creation; HPA syncs every "
        f"{config.sync_period_s:g} s"
    )
    return f"{line}\n{pod_line}"


def _shade(axes: Sequence[Axes], spans: pd.DataFrame | None, scale: float) -> None:
    """Shade each phase on every axis and name it at the top of the first."""
    if spans is None or spans.empty:
        return
    from matplotlib.transforms import blended_transform_factory

    for row in spans.itertuples(index=False):
        start, stop = row.start_s / scale, row.end_s / scale
        color = _PHASE_COLORS.get(row.phase, "#eeeeee")
        for axis in axes:
            axis.axvspan(start, stop, color=color, alpha=0.45, linewidth=0, zorder=0)
        top = axes[0]
        top.text(
            (start + stop) / 2,
            1.02,
            row.phase,
            transform=blended_transform_factory(top.transData, top.transAxes),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def plot_scaling_timeline(
    result: SimulationResult,
    hpa: HPASpec | Mapping[str, Any] | None = None,
    phases: pd.DataFrame | None = None,
) -> Figure:
    """The scaling story over time, in four panels sharing the time axis
    (minutes): offered, served and dropped requests/s; ready, desired and
    starting replicas with the HPA's min and max; a serving pod's CPU in
    percent of its request, what the HPA measured at each sync, and the
    target; the latency estimate.

    ``hpa`` names the settings in the title (default: the ones simulated; an
    autoscaling/v2 object or an HPASpec). With ``phases`` (from
    :func:`phases`) each phase is shaded and named, and the end of the
    scale-down stabilization window after the load fell is marked.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    spec = result.hpa if hpa is None else _as_hpa_spec(hpa)
    frame, pod, config = result.timeline, result.pod, result.config
    minutes = frame["time_s"].to_numpy() / 60.0

    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    load, replicas, cpu, latency = axes

    load.plot(minutes, frame["offered_rps"], label="offered", color="tab:blue")
    load.plot(
        minutes, frame["served_rps"], label="served", color="tab:green", linestyle="--"
    )
    dropped = frame["dropped"] / config.step_s
    if (dropped > 0).any():
        load.fill_between(
            minutes, 0, dropped, color="tab:red", alpha=0.5, label="dropped"
        )
    load.set_ylabel("requests / s")
    load.set_ylim(bottom=0)

    replicas.step(
        minutes, frame["replicas"], where="post", label="ready", color="tab:blue"
    )
    replicas.step(
        minutes,
        frame["desired_replicas"],
        where="post",
        label="desired (HPA)",
        color="tab:orange",
        linestyle="--",
    )
    replicas.fill_between(
        minutes,
        frame["replicas"],
        frame["replicas"] + frame["starting_pods"],
        step="post",
        color="tab:orange",
        alpha=0.3,
        label="starting",
    )
    for value, name in ((spec.min_replicas, "min"), (spec.max_replicas, "max")):
        replicas.axhline(value, color="grey", linestyle=":", linewidth=1)
        replicas.text(
            minutes[0], value, f" {name} {value}", va="bottom", fontsize=8, color="grey"
        )
    replicas.set_ylabel("replicas")
    replicas.set_ylim(0, spec.max_replicas + 1)
    replicas.yaxis.set_major_locator(MaxNLocator(integer=True))

    cpu.plot(
        minutes,
        frame["utilization"] * 100,
        label="CPU of a serving pod",
        color="tab:purple",
    )
    cpu.step(
        minutes,
        frame["hpa_utilization_pct"],
        where="post",
        label="measured by the HPA",
        color="black",
        linewidth=1,
    )
    cpu.axhline(
        spec.target_cpu_utilization,
        color="tab:red",
        linestyle="--",
        label=f"target {spec.target_cpu_utilization} %",
    )
    if pod.cpu_limit_cores is not None:
        cpu.axhline(
            pod.cpu_limit_cores / pod.cpu_request_cores * 100,
            color="grey",
            linestyle=":",
            label="CPU limit",
        )
    cpu.set_ylabel("CPU (% of request)")
    cpu.set_ylim(bottom=0)

    latency.plot(
        minutes,
        frame["latency_ms_estimate"],
        color="tab:brown",
        label="waiting + unloaded latency",
    )
    latency.set_ylabel("latency (ms, estimate)")
    if pod.base_latency_ms > 0 and (
        frame["latency_ms_estimate"].max() > 20 * pod.base_latency_ms
    ):
        # Queueing can add seconds to a latency of milliseconds; on a linear
        # axis the quiet phases would be a flat line at zero.
        latency.set_yscale("log")
    else:
        latency.set_ylim(bottom=0)
    latency.set_xlabel("time (minutes)")

    _shade(axes, phases, 60.0)
    if phases is not None and (phases["phase"] == "cool-down").any():
        fall = float(phases.loc[phases["phase"] == "cool-down", "start_s"].iloc[0])
        window_end = (fall + _scale_down_window_s(spec, config)) / 60.0
        replicas.axvline(window_end, color="tab:green", linestyle="-.", linewidth=1)
        replicas.text(
            window_end,
            spec.max_replicas + 0.5,
            " scale-down window ends",
            fontsize=8,
            color="tab:green",
            va="center",
        )
    for axis in axes:
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    fig.suptitle(_settings_title(spec, pod, config), fontsize=10)
    fig.tight_layout()
    return fig


def plot_cluster_vs_simulation(
    sample: pd.DataFrame,
    result: SimulationResult,
    *,
    offset_s: float = 0.0,
) -> Figure:
    """The real HPA (``Cluster.sample``'s table) against the simulator's
    prediction for the same load, in three panels sharing the time axis
    (minutes): ready and desired replicas; the CPU utilization the HPA
    measured, with its target; the pods' total CPU cores (the cluster's from
    metrics.k8s.io; a note says when it had none).

    ``offset_s`` is the simulation time at which sampling began (``time_s``
    of the sample counts from its first poll). Raises DataError when the
    sample lacks time_s, ready_replicas, desired_replicas or cpu_utilization.

    Limitation: the simulated CPU counts serving pods only; a real pod also
    burns CPU while it loads the model, which shows in the cluster's total.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    _require(sample, _SAMPLE_REQUIRED, "cluster sample")
    frame, pod, spec = result.timeline, result.pod, result.hpa
    sim_minutes = frame["time_s"].to_numpy() / 60.0
    real_minutes = (sample["time_s"].to_numpy(dtype=float) + offset_s) / 60.0

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    replicas, utilization, cores = axes

    replicas.step(
        real_minutes,
        sample["ready_replicas"],
        where="post",
        color="tab:blue",
        label="cluster: ready",
    )
    replicas.step(
        real_minutes,
        sample["desired_replicas"],
        where="post",
        color="tab:blue",
        linestyle="--",
        label="cluster: desired",
    )
    replicas.step(
        sim_minutes,
        frame["replicas"],
        where="post",
        color="tab:orange",
        label="simulated: ready",
    )
    replicas.step(
        sim_minutes,
        frame["desired_replicas"],
        where="post",
        color="tab:orange",
        linestyle="--",
        label="simulated: desired",
    )
    for value in (spec.min_replicas, spec.max_replicas):
        replicas.axhline(value, color="grey", linestyle=":", linewidth=1)
    replicas.set_ylabel("replicas")
    replicas.set_ylim(0, spec.max_replicas + 1)
    replicas.yaxis.set_major_locator(MaxNLocator(integer=True))

    utilization.plot(
        real_minutes,
        sample["cpu_utilization"],
        marker=".",
        color="tab:blue",
        label="cluster: HPA's measure",
    )
    utilization.step(
        sim_minutes,
        frame["hpa_utilization_pct"],
        where="post",
        color="tab:orange",
        label="simulated: HPA's measure",
    )
    utilization.axhline(
        spec.target_cpu_utilization,
        color="tab:red",
        linestyle="--",
        label=f"target {spec.target_cpu_utilization} %",
    )
    utilization.set_ylabel("CPU (% of request)")
    utilization.set_ylim(bottom=0)

    simulated_cores = frame["utilization"] * pod.cpu_request_cores * frame["replicas"]
    cores.plot(
        sim_minutes, simulated_cores, color="tab:orange", label="simulated: serving"
    )
    if "cpu_millicores" in sample and sample["cpu_millicores"].notna().any():
        cores.plot(
            real_minutes,
            sample["cpu_millicores"] / 1000.0,
            marker=".",
            color="tab:blue",
            label="cluster: all pods",
        )
    else:
        cores.text(
            0.5,
            0.5,
            "no pod metrics from the cluster (metrics.k8s.io)",
            transform=cores.transAxes,
            ha="center",
            color="grey",
        )
    cores.set_ylabel("CPU cores, all pods")
    cores.set_ylim(bottom=0)
    cores.set_xlabel("time (minutes)")

    for axis in axes:
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    fig.suptitle(
        "Cluster against simulation\n"
        + _settings_title(spec, pod, result.config).splitlines()[0],
        fontsize=10,
    )
    fig.tight_layout()
    return fig
