"""Tests of the scaling demo's library: capacity measurement against a real
local server, the demo load, the settings and phase tables, and the plots."""

from __future__ import annotations

import asyncio
import copy
import logging
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from mlkit.deploy import scaling  # noqa: E402
from mlkit.deploy.autoscale import (  # noqa: E402
    HPASpec,
    PodModel,
    SimulationConfig,
    calibrate_pod,
    hpa_spec_from_object,
    simulate,
)
from mlkit.deploy.objects import build_objects  # noqa: E402
from mlkit.deploy.scaling import (  # noqa: E402
    CAPACITY_COLUMNS,
    PHASE_COLUMNS,
    PHASE_NAMES,
    calibrate_for_objects,
    cpu_at_capacity_pct,
    demo_load_profile,
    find_object,
    hpa_settings_table,
    measure_capacity,
    phases,
    plot_capacity_curve,
    plot_cluster_vs_simulation,
    plot_scaling_timeline,
    rps_at_target,
)
from mlkit.errors import ConfigError, DataError  # noqa: E402
from mlkit.serve.loadtest import parse_load_profile  # noqa: E402
from tests.threaded_server import serve_in_thread

MODEL_SHA = "0123456789ab" + "d" * 52
IMAGE = f"registry.example/mlkit-serve:abc-{MODEL_SHA[:12]}"
# Seconds the fake endpoint takes, and the CPU seconds it pretends to use.
SLEEP_S = 0.05
CPU_PER_REQUEST = 0.01

# A capacity curve shaped like a CPU-bound server's: 20 requests/s at most,
# 45 millicores per request/s on top of 50 idle, so one core at 1.0 request
# carries (0.6 - 0.05) / 0.045 = 12.2 requests/s at a 60 % target.
CURVE = pd.DataFrame(
    {
        "concurrency": [1, 2, 4, 8, 16, 32],
        "throughput_rps": [5.0, 9.0, 15.0, 19.0, 20.0, 20.0],
        "p50_ms": [200.0, 220.0, 260.0, 420.0, 800.0, 1600.0],
        "p95_ms": [250.0, 300.0, 350.0, 600.0, 1000.0, 2000.0],
    }
)
CURVE["cpu_cores"] = 0.05 + 0.045 * CURVE["throughput_rps"]


def _objects(**overrides):
    return build_objects({"image": IMAGE, "model_sha256": MODEL_SHA, **overrides})


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- measure_capacity against a real server -----------------------------------


def _app() -> FastAPI:
    app = FastAPI()
    app.state.cpu_seconds = 0.0

    @app.get("/work")
    async def work() -> dict:
        await asyncio.sleep(SLEEP_S)
        # Counted before the answer: every answered request's "CPU" is in.
        app.state.cpu_seconds += CPU_PER_REQUEST
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def app_server():
    """A real uvicorn server on a free loopback port, in a background thread."""
    app = _app()
    with serve_in_thread(app) as url:
        yield url, app


class FakeServer:
    """What measure_capacity reads of a LocalServer: a URL and CPU seconds
    (here the app's own counter), and resident memory."""

    def __init__(self, url: str, app: FastAPI) -> None:
        self.url = url
        self.app = app

    def cpu_seconds(self) -> float:
        return self.app.state.cpu_seconds

    def rss_bytes(self) -> int:
        return 100 * 1024 * 1024


class NoMemoryServer:
    def __init__(self, url: str, app: FastAPI) -> None:
        self.url = url
        self.app = app

    def cpu_seconds(self) -> float:
        return self.app.state.cpu_seconds


def _work(i: int) -> dict:
    return {"method": "GET", "url": "/work"}


def test_measure_capacity_measures_each_level(app_server):
    url, app = app_server

    frame = measure_capacity(
        FakeServer(url, app),
        _work,
        levels=(1, 2, 4),
        seconds_per_level=0.6,
        warmup_s=0.3,
    )

    assert list(frame.columns) == list(CAPACITY_COLUMNS)
    assert frame["concurrency"].tolist() == [1, 2, 4]
    assert (frame["errors"] == 0).all()
    assert (frame["requests"] > 0).all()
    # Bounds the endpoint's sleep sets, whatever the machine's speed: no
    # request is faster than SLEEP_S, so no level beats concurrency / SLEEP_S.
    assert (frame["p50_ms"] >= SLEEP_S * 1000).all()
    assert (frame["p95_ms"] >= frame["p50_ms"]).all()
    assert (frame["throughput_rps"] <= frame["concurrency"] / SLEEP_S + 1e-9).all()
    assert frame["throughput_rps"].iloc[-1] > frame["throughput_rps"].iloc[0]
    # The CPU delta covers the measured requests only, not the warm-up's.
    cpu_seconds = (frame["cpu_cores"] * frame["wall_s"]).tolist()
    assert cpu_seconds == pytest.approx((CPU_PER_REQUEST * frame["requests"]).tolist())
    assert (frame["rss_mib"] == 100.0).all()
    assert frame["machine_busy"].between(0, 1).all()
    assert (frame["loadgen_cpu_cores"] > 0).all()

    pod = calibrate_pod(frame, 1.0, 2.0)
    assert pod.capacity_rps == frame["throughput_rps"].max()
    assert pod.cpu_per_rps > 0


def test_measure_capacity_without_memory_reading_or_warmup(app_server):
    url, app = app_server

    frame = measure_capacity(
        NoMemoryServer(url, app), _work, levels=[2], seconds_per_level=0.3, warmup_s=0
    )

    assert len(frame) == 1
    assert math.isnan(frame["rss_mib"].iat[0])
    assert frame["requests"].iat[0] > 0


def test_measure_capacity_counts_failed_requests(app_server, caplog):
    url, app = app_server

    def missing(i: int) -> dict:
        return {"method": "GET", "url": "/missing"}

    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        frame = measure_capacity(
            FakeServer(url, app), missing, levels=[1], seconds_per_level=0.2, warmup_s=0
        )

    assert frame["errors"].iat[0] == frame["requests"].iat[0] > 0
    assert frame["throughput_rps"].iat[0] == 0
    assert math.isnan(frame["p50_ms"].iat[0])
    assert "HTTP 404" in caplog.text


class BusyServer(NoMemoryServer):
    """A server that burns far more CPU than any machine has."""

    def __init__(self, url: str, app: FastAPI) -> None:
        super().__init__(url, app)
        self.calls = 0

    def cpu_seconds(self) -> float:
        self.calls += 1
        return 1000.0 * self.calls


def test_measure_capacity_warns_when_the_machine_is_the_limit(app_server, caplog):
    url, app = app_server

    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        frame = measure_capacity(
            BusyServer(url, app), _work, levels=[1], seconds_per_level=0.2, warmup_s=0
        )

    assert frame["cpu_cores"].iat[0] > 1000
    assert frame["loadgen_cpu_cores"].iat[0] >= 0
    assert "measure the machine, not the server" in caplog.text
    assert "at concurrency 1 " in caplog.text


def test_busy_share_without_a_reading():
    assert math.isnan(scaling._busy_share(None, (5, 10)))
    assert math.isnan(scaling._busy_share((5, 10), (5, 10)))
    assert scaling._busy_share((5, 10), (8, 14)) == 0.75


class UntouchableServer:
    url = "http://127.0.0.1:9"

    def cpu_seconds(self) -> float:
        raise AssertionError("measured although the arguments were invalid")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": []}, "levels is empty"),
        ({"levels": [0]}, "at least 1"),
        ({"levels": [1.5]}, "whole numbers"),
        ({"levels": [True]}, "whole numbers"),
        ({"levels": [1, 5000]}, "concurrency"),
        ({"seconds_per_level": 0}, "seconds_per_level"),
        ({"seconds_per_level": math.inf}, "seconds_per_level"),
        ({"warmup_s": -1}, "warmup_s"),
    ],
)
def test_measure_capacity_refuses_bad_arguments_before_sending(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        measure_capacity(UntouchableServer(), _work, **kwargs)


# --- objects and calibration ----------------------------------------------------


def test_find_object_needs_exactly_one():
    objects = _objects()

    assert find_object(objects, "HorizontalPodAutoscaler")["kind"] == (
        "HorizontalPodAutoscaler"
    )
    with pytest.raises(ConfigError, match="exactly one Ingress.*found 0"):
        find_object(objects, "Ingress")
    with pytest.raises(ConfigError, match="found 2"):
        find_object(objects + [objects[-1]], "HorizontalPodAutoscaler")


def test_calibrate_for_objects_reads_the_pod_resources_and_queue():
    objects = _objects(
        resources={
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        serve={"max_queue": 64},
    )

    pod = calibrate_for_objects(CURVE, objects)

    assert pod.cpu_request_cores == 0.5
    assert pod.cpu_limit_cores == 2.0
    assert pod.max_queue == 64
    assert pod.capacity_rps == 20.0
    assert pod.base_latency_ms == 200.0
    assert pod.cpu_per_rps == pytest.approx(0.045)
    assert pod.idle_cpu_cores == pytest.approx(0.05)


def test_calibrate_for_objects_refuses_a_pod_without_cpu_request():
    objects = _objects()
    deployment = find_object(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["requests"]["cpu"]
    del container["resources"]["limits"]
    no_config_map = [o for o in objects if o["kind"] != "ConfigMap"]

    with pytest.raises(ConfigError, match="no resources.requests.cpu"):
        calibrate_for_objects(CURVE, no_config_map)

    deployment["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(ConfigError, match=r"containers\[0\] is missing"):
        calibrate_for_objects(CURVE, objects)
    with pytest.raises(ConfigError, match="one Deployment"):
        calibrate_for_objects(CURVE, [])


def test_calibrate_for_objects_warns_when_the_hpa_could_never_scale(caplog):
    # CPU that hardly grows with throughput, as on a machine too small for
    # the server and the load generator: 40 % at most, below the 60 % target.
    starved = CURVE.assign(cpu_cores=0.35 + 0.0025 * CURVE["throughput_rps"])

    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        pod = calibrate_for_objects(starved, _objects())

    assert cpu_at_capacity_pct(pod) == pytest.approx(40.0)
    assert "the HPA would never add a pod" in caplog.text
    value = hpa_settings_table(find_object(_objects(), "HorizontalPodAutoscaler"), pod)[
        "value"
    ]
    assert value[("pod", "CPU at capacity")] == "40 % of the request"
    assert value[("pod", "load at the CPU target")] == (
        "20.0 requests/s per pod (its capacity: the target is never reached)"
    )

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        saturating = calibrate_for_objects(starved, _objects(), cpu="saturating")

    # The whole 2-core limit at 20 requests/s: 200 % of the request.
    assert saturating.cpu_per_rps == pytest.approx(2.0 / 20.0)
    assert cpu_at_capacity_pct(saturating) == pytest.approx(200.0)
    assert "never add a pod" not in caplog.text
    with pytest.raises(ConfigError, match="'measured' or 'saturating'"):
        calibrate_for_objects(CURVE, _objects(), cpu="guessed")


def test_calibrate_for_objects_without_limit():
    objects = _objects()
    container = find_object(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    del container["resources"]["limits"]

    pod = calibrate_for_objects(CURVE, objects)

    assert pod.cpu_limit_cores is None
    assert pod.max_queue == 256


# --- the demo load and its simulation -------------------------------------------


def test_demo_load_profile_tells_the_story():
    points = demo_load_profile(20.0)

    times = [t for t, _ in points]
    levels = [v for _, v in points]
    assert times == [0.0, 120.0, 300.0, 600.0, 630.0, 1230.0]
    assert levels == pytest.approx([1.0, 1.0, 60.0, 60.0, 1.0, 1.0])
    # A ramp an open-loop load test accepts as it is.
    profile = parse_load_profile({"mode": "open", "ramp": points, "duration_s": 1230})
    assert profile.peak_level == pytest.approx(60.0)


def test_demo_load_profile_durations_are_parameters(caplog):
    points = demo_load_profile(
        10.0,
        quiet_fraction=0.0,
        peak_factor=4.0,
        quiet_s=10,
        ramp_s=20,
        hold_s=30,
        drop_s=5,
        scale_down_window_s=60,
    )
    assert points == [
        (0.0, 0.0),
        (10.0, 0.0),
        (30.0, 40.0),
        (60.0, 40.0),
        (65.0, 0.0),
        (425.0, 0.0),
    ]

    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        short = demo_load_profile(10.0, cool_down_s=200)
    assert short[-1][0] - short[-2][0] == 200
    assert "before the HPA may remove a pod" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity_rps": 0}, "capacity_rps"),
        ({"capacity_rps": math.nan}, "capacity_rps"),
        ({"ramp_s": 0}, "ramp_s"),
        ({"cool_down_s": -5}, "cool_down_s"),
        ({"scale_down_window_s": -1}, "scale_down_window_s"),
        ({"peak_factor": 0}, "peak_factor"),
        ({"quiet_fraction": 3.0}, "quiet_fraction"),
        ({"quiet_fraction": -0.1}, "quiet_fraction"),
    ],
)
def test_demo_load_profile_refuses_bad_values(kwargs, match):
    arguments = {"capacity_rps": 20.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        demo_load_profile(**arguments)


def _demo(max_replicas: int = 10, **profile_kwargs):
    objects = _objects(max_replicas=max_replicas)
    hpa = find_object(objects, "HorizontalPodAutoscaler")
    pod = calibrate_for_objects(CURVE, objects)
    profile = demo_load_profile(pod.effective_capacity_rps, **profile_kwargs)
    config = SimulationConfig(duration_s=profile[-1][0])
    result = simulate(profile, hpa_spec_from_object(hpa), pod, config)
    return result, profile, hpa


def test_demo_scales_up_above_min_and_back_after_the_window():
    result, profile, _ = _demo()
    spec = result.hpa

    # By hand: 0.6 cores at the target carry (0.6 - 0.05) / 0.045 = 12.2
    # requests/s, so the 60 requests/s peak needs ceil(60 / 12.2) = 5 pods.
    assert rps_at_target(spec, result.pod) == pytest.approx(12.22, abs=0.01)
    needed = math.ceil(60.0 / rps_at_target(spec, result.pod))
    assert needed == 5
    # The ramp saturates the first pods before new ones are ready, and the
    # HPA sizes for that saturated CPU: it may overshoot, never undershoot.
    assert needed <= result.max_replicas <= spec.max_replicas
    assert result.timeline["replicas"].iat[-1] == spec.min_replicas

    table = phases(result, profile)
    assert list(table.columns) == list(PHASE_COLUMNS)
    assert table["phase"].tolist() == list(PHASE_NAMES)
    by_phase = table.set_index("phase")
    assert by_phase.loc["quiet", "replicas_max"] == 1
    assert by_phase.loc["quiet", "start_s"] == 0
    assert by_phase.loc["ramp", "start_s"] == 120
    assert by_phase.loc["peak", "start_s"] == 300
    assert by_phase.loc["peak", "replicas_max"] >= needed
    assert by_phase.loc["cool-down", "start_s"] == 600
    assert by_phase.loc["cool-down", "replicas_max"] >= needed
    # The highest recommendation is at the load's fall: nothing may be removed
    # for the scale-down window after it.
    assert by_phase.loc["scaled-down", "start_s"] >= 600 + 300
    assert by_phase.loc["scaled-down", "replicas_max"] == 1
    assert by_phase.loc["scaled-down", "end_s"] == 1230
    assert by_phase.loc["quiet", "utilization_pct"] == pytest.approx(
        (0.05 + 0.045 * 1.0) * 100
    )
    assert table["duration_s"].sum() == pytest.approx(1230)


def test_demo_is_capped_at_max_replicas():
    result, profile, _ = _demo(max_replicas=3)

    assert result.max_replicas == 3
    assert phases(result, profile).set_index("phase").loc["peak", "desired_max"] == 3


def test_phases_without_scale_down_in_time(caplog):
    result, profile, _ = _demo(cool_down_s=100)

    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.scaling"):
        table = phases(result, profile)

    assert "scaled-down" not in table["phase"].tolist()
    assert table["end_s"].iat[-1] == pytest.approx(profile[-1][0])
    assert "not back at 1 replicas" in caplog.text


def test_phases_of_a_load_that_starts_at_its_peak():
    pod = PodModel(capacity_rps=20, base_latency_ms=10, cpu_per_rps=0.05)
    profile = [(0.0, 30.0), (60.0, 30.0), (90.0, 1.0), (600.0, 1.0)]
    config = SimulationConfig(duration_s=600, initial_replicas=3)
    result = simulate(profile, HPASpec(max_replicas=3), pod, config)

    table = phases(result, profile)

    assert table["phase"].tolist() == ["peak", "cool-down", "scaled-down"]
    assert table["start_s"].tolist()[:2] == [0, 60]
    assert table["replicas_max"].tolist() == [3, 3, 1]


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ([("a", "b")], "not numeric"),
        ([1.0, 2.0], "wrong shape"),
        ([], "wrong shape"),
        ([(0, 1), (0, 2)], "strictly increasing"),
        ([(0, 1), (10, math.inf)], "finite"),
    ],
)
def test_phases_refuses_bad_profiles(profile, match):
    result, _, _ = _demo()
    with pytest.raises(DataError, match=match):
        phases(result, profile)


# --- the settings table ------------------------------------------------------------


def test_hpa_settings_table_reads_the_deployed_object():
    hpa = find_object(_objects(max_replicas=6), "HorizontalPodAutoscaler")

    table = hpa_settings_table(hpa)

    assert table.index.names == ["section", "setting"]
    value = table["value"]
    assert value[("HPA", "min replicas")] == "1"
    assert value[("HPA", "max replicas")] == "6"
    assert value[("HPA", "CPU target")] == "60 % of the CPU request"
    assert value[("HPA", "scale-up stabilization window")] == "0 s"
    assert value[("HPA", "scale-up policies")] == (
        "4 pods per 15 s or 100 % per 15 s, the larger change"
    )
    assert value[("HPA", "scale-down stabilization window")] == "300 s"
    assert value[("HPA", "scale-down policies")] == "100 % per 15 s"
    assert set(table.index.get_level_values("section")) == {"HPA"}


def test_hpa_settings_table_with_pod_and_simulation():
    objects = _objects()
    hpa = find_object(objects, "HorizontalPodAutoscaler")
    pod = calibrate_for_objects(CURVE, objects)
    config = SimulationConfig(pod_startup_s=60, pod_pending_s=20)

    value = hpa_settings_table(hpa, pod, config)["value"]

    assert value[("pod", "capacity")] == "20.0 requests/s"
    assert value[("pod", "latency unloaded")] == "200.0 ms"
    assert value[("pod", "CPU per request/s")] == "45.0 millicores (+ 50 idle)"
    assert value[("pod", "CPU")] == "request 1 core, limit 2 cores"
    assert value[("pod", "CPU at capacity")] == "95 % of the request"
    assert value[("pod", "queue")] == "256 requests"
    assert value[("pod", "load at the CPU target")] == "12.2 requests/s per pod"
    assert value[("simulation", "pod start-up")] == "60 s (of which pending 20 s)"
    assert value[("simulation", "HPA sync period")] == "15 s"
    assert value[("simulation", "tolerance")] == "10%"


def test_hpa_settings_table_of_other_hpa_forms():
    hpa = find_object(_objects(), "HorizontalPodAutoscaler")
    legacy = copy.deepcopy(hpa)
    del legacy["spec"]["behavior"]

    value = hpa_settings_table(legacy, config=SimulationConfig())["value"]
    assert value[("HPA", "scale-down stabilization window")] == "300 s"
    assert value[("HPA", "scale-up")].startswith("no behavior")

    spec = HPASpec(
        max_replicas=4,
        behavior={
            "scaleUp": {"selectPolicy": "Disabled"},
            "scaleDown": {
                "selectPolicy": "Min",
                "policies": [
                    {"type": "Pods", "value": 1, "periodSeconds": 60},
                    {"type": "Percent", "value": 50, "periodSeconds": 60},
                ],
            },
        },
    )
    value = hpa_settings_table(spec)["value"]
    assert value[("HPA", "scale-up policies")] == "disabled"
    assert value[("HPA", "scale-down policies")] == (
        "1 pods per 60 s or 50 % per 60 s, the smaller change"
    )
    value = hpa_settings_table({"max_replicas": 4})["value"]
    assert value[("HPA", "max replicas")] == "4"

    with pytest.raises(ConfigError, match="maxReplicas"):
        hpa_settings_table({"min_replicas": 2})
    with pytest.raises(ConfigError, match="kind"):
        hpa_settings_table({**hpa, "kind": "Deployment"})


def test_rps_at_target_is_capped_by_capacity():
    pod = PodModel(capacity_rps=10, base_latency_ms=5, cpu_per_rps=0.01)
    assert rps_at_target(HPASpec(max_replicas=2), pod) == 10
    free = PodModel(capacity_rps=7, base_latency_ms=5, cpu_per_rps=0)
    assert rps_at_target(HPASpec(max_replicas=2), free) == 7
    capped = PodModel(capacity_rps=7, base_latency_ms=5, cpu_per_rps=1.0)
    value = hpa_settings_table(HPASpec(max_replicas=2), capped)["value"]
    assert value[("pod", "capacity")] == "2.0 requests/s (CPU limit; measured 7.0)"


# --- plots -------------------------------------------------------------------------


def test_plot_capacity_curve():
    fig = plot_capacity_curve(CURVE)

    throughput, latency, cpu = fig.axes
    assert throughput.get_ylabel() == "requests / s"
    assert cpu.get_ylabel() == "CPU cores"
    assert latency.get_ylabel() == "latency (ms)"
    assert throughput.get_xscale() == "log"
    assert [t.get_text() for t in throughput.get_legend().get_texts()] == [
        "throughput",
        "server CPU",
    ]
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["p50", "p95"]
    assert [line.get_ydata().tolist() for line in latency.get_lines()][0] == (
        CURVE["p50_ms"].tolist()
    )
    plt.close(fig)


def test_plot_capacity_curve_without_cpu_and_bad_tables():
    fig = plot_capacity_curve(CURVE.drop(columns=["cpu_cores", "p95_ms"]))
    assert len(fig.axes) == 2
    plt.close(fig)

    with pytest.raises(DataError, match="p50_ms"):
        plot_capacity_curve(CURVE.drop(columns=["p50_ms"]))
    with pytest.raises(DataError, match="empty"):
        plot_capacity_curve(CURVE.iloc[0:0])


def test_plot_scaling_timeline_with_phases():
    result, profile, hpa = _demo()
    table = phases(result, profile)

    fig = plot_scaling_timeline(result, hpa, phases=table)

    load, replicas, cpu, latency = fig.axes
    assert [a.get_ylabel() for a in fig.axes] == [
        "requests / s",
        "replicas",
        "CPU (% of request)",
        "latency (ms, estimate)",
    ]
    assert latency.get_xlabel() == "time (minutes)"
    assert load.get_shared_x_axes().joined(load, latency)
    title = fig._suptitle.get_text()
    assert "1-10 replicas" in title
    assert "CPU target 60 %" in title
    assert "scale-down window 300 s" in title
    labels = {t.get_text() for t in load.texts}
    assert labels == set(PHASE_NAMES)
    assert " scale-down window ends" in {t.get_text() for t in replicas.texts}
    assert "dropped" in [t.get_text() for t in load.get_legend().get_texts()]
    assert "target 60 %" in [t.get_text() for t in cpu.get_legend().get_texts()]
    # The ramp's queue takes the latency estimate far above its floor.
    assert latency.get_yscale() == "log"
    plt.close(fig)


def test_plot_scaling_timeline_plain():
    pod = PodModel(
        capacity_rps=20, base_latency_ms=0, cpu_per_rps=0.05, cpu_limit_cores=None
    )
    result = simulate(
        5.0, HPASpec(max_replicas=3), pod, SimulationConfig(duration_s=120)
    )

    fig = plot_scaling_timeline(result)

    load, replicas, cpu, latency = fig.axes
    assert len(load.texts) == 0
    assert latency.get_yscale() == "linear"
    assert "dropped" not in [t.get_text() for t in load.get_legend().get_texts()]
    assert "CPU limit" not in [t.get_text() for t in cpu.get_legend().get_texts()]
    assert "1-3 replicas" in fig._suptitle.get_text()
    plt.close(fig)


def _sample(result, *, metrics: bool = True) -> pd.DataFrame:
    timeline = result.timeline
    times = np.arange(0.0, timeline["time_s"].iat[-1], 5.0)
    ready = np.interp(times, timeline["time_s"], timeline["replicas"]).round()
    utilization = np.interp(times, timeline["time_s"], timeline["utilization"] * 100)
    return pd.DataFrame(
        {
            "time_s": times,
            "ready_replicas": ready,
            "desired_replicas": ready,
            "cpu_utilization": utilization,
            "cpu_millicores": utilization * 10 * ready if metrics else np.nan,
        }
    )


def test_plot_cluster_vs_simulation():
    result, _, _ = _demo()
    sample = _sample(result)

    fig = plot_cluster_vs_simulation(sample, result, offset_s=30)

    replicas, utilization, cores = fig.axes
    assert [a.get_ylabel() for a in fig.axes] == [
        "replicas",
        "CPU (% of request)",
        "CPU cores, all pods",
    ]
    legend = [t.get_text() for t in replicas.get_legend().get_texts()]
    assert legend == [
        "cluster: ready",
        "cluster: desired",
        "simulated: ready",
        "simulated: desired",
    ]
    # The sample's clock starts at the offset on the simulation's.
    cluster_line = replicas.get_lines()[0]
    assert cluster_line.get_xdata()[0] == pytest.approx(30 / 60)
    assert "cluster: all pods" in [t.get_text() for t in cores.get_legend().get_texts()]
    assert "Cluster against simulation" in fig._suptitle.get_text()
    plt.close(fig)


def test_plot_cluster_vs_simulation_without_metrics_or_columns():
    result, _, _ = _demo()

    fig = plot_cluster_vs_simulation(_sample(result, metrics=False), result)
    cores = fig.axes[2]
    assert any("no pod metrics" in t.get_text() for t in cores.texts)
    plt.close(fig)

    with pytest.raises(DataError, match="cpu_utilization"):
        plot_cluster_vs_simulation(
            _sample(result).drop(columns=["cpu_utilization"]), result
        )
