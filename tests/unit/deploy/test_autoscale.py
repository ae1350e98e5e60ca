from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from mlkit.deploy.autoscale import (
    HPABehavior,
    HPAController,
    HPASpec,
    PodModel,
    ScaleDownRules,
    ScaleUpRules,
    ScalingPolicy,
    SimulationConfig,
    calibrate_pod,
    hpa_spec_from_object,
    offered_load,
    recommended_replicas,
    simulate,
)
from mlkit.errors import ConfigError, DataError

# One pod serves 100 rps at most and uses 0.01 core per rps: its utilization
# of a 1-core request is rps_per_pod / 100, so 90 rps per pod is exactly 90 %.
POD = PodModel(capacity_rps=100, base_latency_ms=50, cpu_per_rps=0.01, max_queue=50)
# Pending 15 s, ready 45 s after creation, a 15 s metric window.
TIMING = {"pod_pending_s": 15, "pod_startup_s": 45, "metric_window_s": 15}


def run(load, hpa, *, pod=POD, **config):
    return simulate(load, hpa, pod, {**TIMING, **config})


def at(result, column, time_s):
    frame = result.timeline
    return frame.loc[frame["time_s"] == time_s, column].item()


def policy(type_, value, period):
    return ScalingPolicy(type=type_, value=value, period_seconds=period)


# The metric's recommendation, hand-computed as upstream does it.


def test_recommendation_is_ceil_of_ready_times_ratio():
    # 3 pods at 90 % of a 1000m request, target 50 %: ceil(3 * 90 / 50) = 6.
    assert recommended_replicas(3, [900, 900, 900], 1000, 50) == (6, 90)


def test_utilization_is_integer_percent_of_summed_requests():
    # 1799m of 2000m is 89.95 %, truncated to 89 % as upstream.
    assert recommended_replicas(2, [900, 899], 1000, 50) == (4, 89)


def test_within_tolerance_keeps_current_count():
    assert recommended_replicas(3, [540] * 3, 1000, 50) == (3, 54)  # ratio 1.08
    assert recommended_replicas(3, [450] * 3, 1000, 50) == (3, 45)  # ratio 0.9
    assert recommended_replicas(3, [560] * 3, 1000, 50) == (4, 56)  # ceil(3.36)


def test_tolerance_may_differ_by_direction():
    loose_up = (0.1, 0.5)  # (scale-down, scale-up)
    assert recommended_replicas(3, [700] * 3, 1000, 50, tolerance=loose_up) == (3, 70)
    assert recommended_replicas(3, [300] * 3, 1000, 50, tolerance=loose_up) == (2, 30)


def test_no_usable_sample_gives_none():
    assert recommended_replicas(3, [], 1000, 50, unready_pods=2, missing_pods=1) is None


def test_unready_pods_count_as_idle_on_scale_up():
    # 2 ready pods at 150 %, 2 unready at 0 %: 3000m / 4000m = 75 %,
    # ratio 1.5, ceil(1.5 * 4) = 6.
    assert recommended_replicas(4, [1500, 1500], 1000, 50, unready_pods=2) == (6, 150)
    # At 100 %: 2000m / 4000m = 50 %, exactly on target, so no change.
    assert recommended_replicas(4, [1000, 1000], 1000, 50, unready_pods=2) == (4, 100)


def test_unready_pods_are_ignored_on_scale_down():
    # Ratio 0.2 over the 2 ready pods only: ceil(0.2 * 2) = 1.
    assert recommended_replicas(4, [100, 100], 1000, 50, unready_pods=2) == (1, 10)


def test_missing_pods_count_as_full_request_on_scale_down():
    # 2 pods at 10 % and one missing at 100 %: 1200m / 3000m = 40 %,
    # 40 / 80 = 0.5, ceil(1.5) = 2.
    assert recommended_replicas(3, [100, 100], 1000, 80, missing_pods=1) == (2, 10)


def test_missing_pods_count_at_target_above_100_percent_on_scale_down():
    # Target 150 %: a missing pod counts as 150 %, so 300 + 1500 + 1500 =
    # 3300m of 3000m is 110 %, 110 / 150 * 3 = 2.2 -> 3: no change (at 100 %
    # it would have been 2300m, 76 %, -> 2).
    assert recommended_replicas(3, [300], 1000, 150, missing_pods=2) == (3, 30)


def test_missing_pods_count_as_idle_on_scale_up_and_may_cancel_it():
    # 1 pod at 150 % and one missing: 1500m / 2000m = 75 %, ratio 1.5 -> 3.
    assert recommended_replicas(2, [1500], 1000, 50, missing_pods=1) == (3, 150)
    # 1 pod at 90 %, 2 missing: 900m / 3000m = 30 %: the direction flips.
    assert recommended_replicas(3, [900], 1000, 50, missing_pods=2) == (3, 90)


def test_missing_pods_on_exact_target_change_nothing():
    assert recommended_replicas(3, [500], 1000, 50, missing_pods=2) == (3, 50)


def test_scale_down_that_would_grow_keeps_current():
    # 3 ready at 85 % + 1 missing counted at 100 %: 3550m / 4000m = 88 %,
    # 88/100 = 0.88, ceil(0.88 * 4) = 4, more than current 3: no change.
    assert recommended_replicas(3, [850] * 3, 1000, 100, missing_pods=1) == (3, 85)


# The controller's stabilization and rate limits, one sync every 15 s.


def syncs(controller, current, metric, n):
    counts = []
    for k in range(1, n + 1):
        current = controller.reconcile(15.0 * k, current, metric)
        counts.append(current)
    return counts


def test_default_scale_up_takes_the_larger_of_4_pods_and_100_percent():
    controller = HPAController(HPASpec(max_replicas=100))
    # max(1 + 4, 2), max(5 + 4, 10), max(10 + 4, 20), ... then the maximum.
    assert syncs(controller, 1, 100, 6) == [5, 10, 20, 40, 80, 100]


def test_select_policy_min_takes_the_smaller_change():
    up = ScaleUpRules(select_policy="Min")
    controller = HPAController(
        HPASpec(max_replicas=100, behavior=HPABehavior(scale_up=up))
    )
    assert syncs(controller, 1, 100, 6) == [2, 4, 8, 12, 16, 20]


def test_select_policy_disabled_forbids_scaling_up():
    up = ScaleUpRules(select_policy="Disabled")
    controller = HPAController(
        HPASpec(max_replicas=100, behavior=HPABehavior(scale_up=up))
    )
    assert syncs(controller, 1, 100, 4) == [1, 1, 1, 1]


def test_policy_period_counts_changes_made_within_it():
    up = ScaleUpRules(policies=[policy("Pods", 4, 60)])
    controller = HPAController(
        HPASpec(max_replicas=100, behavior=HPABehavior(scale_up=up))
    )
    # The 4 pods added at 15 s count until 75 s (an event exactly one period
    # old no longer counts, as upstream).
    assert syncs(controller, 1, 100, 6) == [5, 5, 5, 5, 9, 9]


def test_scale_down_policies_and_select_policy():
    two = [policy("Pods", 2, 15), policy("Percent", 50, 15)]
    spec = {"max_replicas": 20}
    fastest = HPAController(
        HPASpec(
            **spec,
            behavior=HPABehavior(
                scale_down=ScaleDownRules(stabilization_window_seconds=0, policies=two)
            ),
        )
    )
    # min(10 - 2, int(10 * 0.5)), min(3, int(2.5)), min(0, 1) -> min_replicas.
    assert syncs(fastest, 10, 1, 4) == [5, 2, 1, 1]
    slowest = HPAController(
        HPASpec(
            **spec,
            behavior=HPABehavior(
                scale_down=ScaleDownRules(
                    stabilization_window_seconds=0, select_policy="Min", policies=two
                )
            ),
        )
    )
    assert syncs(slowest, 10, 1, 6) == [8, 6, 4, 2, 1, 1]
    frozen = HPAController(
        HPASpec(
            **spec,
            behavior=HPABehavior(
                scale_down=ScaleDownRules(
                    stabilization_window_seconds=0, select_policy="Disabled"
                )
            ),
        )
    )
    assert syncs(frozen, 10, 1, 3) == [10, 10, 10]


def test_scale_down_waits_for_the_stabilization_window():
    controller = HPAController(HPASpec(max_replicas=10))
    counts = syncs(controller, 4, 1, 22)  # at 15, 30, ..., 330 s
    # The first sync (15 s) remembers 4; it leaves the 300 s window at 315 s.
    assert counts[:20] == [4] * 20
    assert counts[20:] == [1, 1]


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation():
    up = ScaleUpRules(stabilization_window_seconds=30)
    controller = HPAController(
        HPASpec(max_replicas=10, behavior=HPABehavior(scale_up=up))
    )
    assert controller.reconcile(15.0, 2, 2) == 2
    assert controller.reconcile(30.0, 2, 6) == 2  # 2 was recommended at 15 s
    assert controller.reconcile(45.0, 2, 6) == 6


def test_replicas_outside_min_max_are_brought_back_at_once():
    controller = HPAController(HPASpec(min_replicas=2, max_replicas=10))
    assert controller.reconcile(15.0, 12, None) == 10
    assert controller.reconcile(30.0, 1, None) == 2
    assert controller.reconcile(45.0, 0, 5) == 0  # a target at zero is left alone


def test_max_replicas_caps_the_policy_limit():
    controller = HPAController(HPASpec(max_replicas=10))
    assert controller.reconcile(15.0, 8, 50) == 10


def test_without_metric_nothing_changes():
    controller = HPAController(HPASpec(max_replicas=10))
    assert controller.reconcile(15.0, 3, None) == 3


def test_hpa_without_behavior_uses_the_older_limits():
    controller = HPAController(HPASpec(max_replicas=100, behavior=None))
    # max(2 * current, 4) per sync.
    assert syncs(controller, 1, 100, 4) == [4, 8, 16, 32]
    down = HPAController(
        HPASpec(max_replicas=100, behavior=None), downscale_stabilization_s=30
    )
    # The highest recommendation of the last 30 s, then straight to it; on
    # this path one made exactly 30 s ago still counts.
    assert syncs(down, 8, 1, 4) == [8, 8, 8, 1]
    floor = HPAController(
        HPASpec(min_replicas=2, max_replicas=10, behavior=None),
        downscale_stabilization_s=0,
    )
    assert syncs(floor, 3, 1, 2) == [3, 2]


def test_simulation_of_an_hpa_without_behavior():
    result = run(
        270.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50, behavior=None),
        duration_s=30,
        initial_replicas=3,
    )
    assert at(result, "desired_replicas", 15) == 6  # min(6, max(2 * 3, 4))


# Whole simulations.


def test_three_pods_at_90_percent_scale_to_6_once():
    result = run(
        270.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50),
        duration_s=120,
        initial_replicas=3,
    )
    frame = result.timeline
    assert at(result, "hpa_utilization_pct", 15) == 90
    assert at(result, "recommended_replicas", 15) == 6
    assert (frame.loc[frame.time_s < 15, "desired_replicas"] == 3).all()
    assert (frame.loc[frame.time_s >= 15, "desired_replicas"] == 6).all()
    # New pods serve 45 s after they were created; until then 3 do.
    assert (frame.loc[frame.time_s < 60, "replicas"] == 3).all()
    assert (frame.loc[frame.time_s >= 60, "replicas"] == 6).all()
    starting = frame.loc[(frame.time_s >= 15) & (frame.time_s < 60), "starting_pods"]
    assert (starting == 3).all()
    assert at(result, "utilization", 59) == pytest.approx(0.9)
    assert at(result, "utilization", 60) == pytest.approx(0.45)
    assert result.time_to_replicas(6) == 60.0
    assert result.time_to_replicas(7) is None
    assert result.total_dropped == 0


def test_scale_up_limited_by_policy_and_by_max_replicas():
    two_pods = HPABehavior(scale_up=ScaleUpRules(policies=[policy("Pods", 2, 60)]))
    limited = run(
        270.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50, behavior=two_pods),
        duration_s=60,
        initial_replicas=3,
    )
    assert at(limited, "desired_replicas", 15) == 5
    capped = run(
        270.0,
        HPASpec(max_replicas=4, target_cpu_utilization=50),
        duration_s=60,
        initial_replicas=3,
    )
    assert capped.timeline["desired_replicas"].max() == 4


def test_within_tolerance_nothing_changes_all_run():
    result = run(
        162.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50),
        duration_s=600,
        initial_replicas=3,
    )  # 54 % per pod
    assert (result.timeline["desired_replicas"] == 3).all()
    assert (result.timeline["hpa_utilization_pct"].dropna() == 54).all()


def test_behavior_tolerance_applies_in_the_simulation():
    loose = HPABehavior(scale_up=ScaleUpRules(tolerance=0.5))
    hpa = {"max_replicas": 10, "target_cpu_utilization": 50}
    # 210 rps over 3 pods: 70 %, ratio 1.4.
    assert (
        run(210.0, {**hpa, "behavior": loose}, duration_s=60, initial_replicas=3)
        .timeline["desired_replicas"]
        .max()
        == 3
    )
    assert (
        run(210.0, hpa, duration_s=60, initial_replicas=3)
        .timeline["desired_replicas"]
        .max()
        == 5
    )


def test_scale_down_happens_300_s_after_the_first_sync():
    result = run(
        40.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50),
        duration_s=400,
        initial_replicas=4,
    )  # 10 % per pod
    frame = result.timeline
    assert (frame.loc[frame.time_s < 315, "replicas"] == 4).all()
    assert (frame.loc[frame.time_s >= 315, "replicas"] == 1).all()
    assert result.load_end_s is None
    assert result.time_back_at_min_s is None


def test_scale_down_policy_removes_one_pod_a_minute():
    slow = HPABehavior(scale_down=ScaleDownRules(policies=[policy("Pods", 1, 60)]))
    result = run(
        40.0,
        HPASpec(max_replicas=10, target_cpu_utilization=50, behavior=slow),
        duration_s=500,
        initial_replicas=4,
    )
    changes = result.timeline.loc[
        result.timeline["replicas"].diff() != 0, ["time_s", "replicas"]
    ]
    assert changes.values.tolist() == [[0, 4], [315, 3], [375, 2], [435, 1]]


def test_peak_then_quiet_summary():
    load = np.where(np.arange(400) < 60, 270.0, 30.0)
    result = run(
        load,
        HPASpec(max_replicas=10, target_cpu_utilization=50),
        duration_s=400,
        initial_replicas=3,
    )
    assert result.max_replicas == 6
    assert result.load_end_s == 60.0
    # The last recommendation of 6 was at 60 s: it leaves the window at 360 s.
    assert at(result, "replicas", 359) == 6
    assert at(result, "replicas", 360) == 1
    assert result.time_back_at_min_s == 300.0
    summary = result.summary()
    assert summary["max_replicas"] == 6
    assert summary["time_back_at_min_s"] == 300.0
    assert summary["total_offered"] == 60 * 270 + 340 * 30
    too_short = run(
        load[:200],
        HPASpec(max_replicas=10, target_cpu_utilization=50),
        duration_s=200,
        initial_replicas=3,
    )
    assert too_short.load_end_s == 60.0
    assert too_short.time_back_at_min_s is None


def test_full_queues_drop_requests():
    pod = PodModel(capacity_rps=10, base_latency_ms=20, cpu_per_rps=0.1, max_queue=5)
    result = run(20.0, HPASpec(min_replicas=1, max_replicas=1), pod=pod, duration_s=10)
    frame = result.timeline
    # Step 0: 20 arrive, 10 served, 10 wait, 5 fit. Then 10 dropped a step.
    assert frame["dropped"].tolist() == [5.0] + [10.0] * 9
    assert (frame["served_rps"] == 10).all()
    assert (frame["queue"] == 5).all()
    assert (frame["latency_ms_estimate"] == 20 + 500).all()
    assert result.total_dropped == 95
    assert result.dropped_fraction == 95 / 200


def test_cpu_limit_caps_capacity_and_utilization():
    pod = PodModel(
        capacity_rps=40,
        base_latency_ms=10,
        cpu_per_rps=0.1,
        cpu_request_cores=1,
        cpu_limit_cores=2,
    )
    assert pod.effective_capacity_rps == 20
    result = run(30.0, HPASpec(max_replicas=1), pod=pod, duration_s=5)
    assert (result.timeline["served_rps"] == 20).all()
    assert (result.timeline["utilization"] == 2.0).all()


def test_target_above_the_cpu_limit_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.autoscale"):
        run(10.0, HPASpec(max_replicas=3, target_cpu_utilization=250), duration_s=5)
    assert "never scale up" in caplog.text


def test_step_size_barely_changes_the_outcome():
    load = [(0, 50), (300, 800), (900, 800), (1000, 50)]
    hpa = HPASpec(max_replicas=20, target_cpu_utilization=60)
    coarse = run(load, hpa, duration_s=1800)
    fine = run(load, hpa, duration_s=1800, step_s=0.1)
    assert fine.max_replicas == coarse.max_replicas
    assert len(fine.timeline) == 18000
    assert fine.total_dropped == pytest.approx(coarse.total_dropped, rel=0.1)


# Which pods the controller trusts, by age in steps.


def grouping(**config):
    from mlkit.deploy.autoscale import _MetricView

    settings = SimulationConfig(**{**TIMING, **config})
    return _MetricView(HPASpec(max_replicas=5), POD, settings)


def test_pods_are_grouped_as_upstream():
    ages = np.array([0, 14, 15, 29, 30, 44, 45, 59, 60, 299, 300, 10**9])
    counted, serving, missing, unready = grouping().group(ages)
    # Pending: 0, 14. Running without metric: 15, 29. Not ready: 30, 44.
    # Ready for less than a metric window, within the 300 s initialization
    # period: 45, 59. The rest count.
    assert ages[counted].tolist() == [60, 299, 300, 10**9]
    assert serving.all()
    assert (missing, unready) == (2, 6)


def test_never_ready_pod_past_initialization_counts_only_without_delay():
    ages = np.array([350])
    slow = {"pod_startup_s": 400}
    counted, _, _, unready = grouping(**slow).group(ages)
    assert (counted.tolist(), unready) == ([False], 1)
    counted, serving, _, unready = grouping(**slow, initial_readiness_delay_s=0).group(
        ages
    )
    assert (counted.tolist(), serving.tolist(), unready) == ([True], [False], 0)


# Load profiles.


def test_load_profile_forms():
    config = SimulationConfig(duration_s=4, step_s=1)
    assert offered_load(lambda t: 2 * t, config).tolist() == [0, 2, 4, 6]
    assert offered_load(lambda t: 5 if t < 2 else 7, config).tolist() == [5, 5, 7, 7]
    assert offered_load(lambda t: math.sqrt(t), config)[-1] == pytest.approx(3**0.5)
    assert offered_load(lambda t: 3.0, config).tolist() == [3, 3, 3, 3]
    assert offered_load(lambda t: np.mean(t), config).tolist() == [0, 1, 2, 3]
    assert offered_load(2.5, config).tolist() == [2.5] * 4
    assert offered_load([1, 2, 3, 4], config).tolist() == [1, 2, 3, 4]
    assert offered_load([(0, 0), (2, 10)], config).tolist() == [0, 5, 10, 10]
    series = pd.Series([10.0, 30.0], index=[1.0, 3.0])
    assert offered_load(series, config).tolist() == [10, 10, 20, 30]


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ([1, 2, 3], "wrong number of steps"),
        ([(0, 1), (0, 2)], "strictly increasing"),
        ([(0, 1), (5, -1)], "non-negative"),
        (lambda t: math.nan, "finite"),
        (np.zeros((2, 2, 2)), "wrong shape"),
        ("fast", "not numeric"),
        (np.empty((0, 2)), "no points"),
    ],
)
def test_bad_load_profile_is_a_data_error(load, message):
    with pytest.raises(DataError, match=message):
        offered_load(load, SimulationConfig(duration_s=4))


# The deployed object.

DEPLOYED = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "mlkit-serve", "namespace": "mlkit"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
        "minReplicas": 2,
        "maxReplicas": 8,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            }
        ],
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "selectPolicy": "Max",
                "policies": [
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                ],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 120,
                "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            },
        },
    },
}


def test_hpa_spec_from_object_reads_every_setting():
    spec = hpa_spec_from_object(DEPLOYED)
    assert (spec.min_replicas, spec.max_replicas, spec.target_cpu_utilization) == (
        2,
        8,
        60,
    )
    down = spec.behavior.scale_down
    assert down.stabilization_window_seconds == 120
    assert down.select_policy == "Min"
    assert down.policies == [policy("Pods", 1, 60)]


def test_hpa_spec_round_trips_through_the_object():
    spec = hpa_spec_from_object(DEPLOYED)
    expected = {k: v for k, v in DEPLOYED["spec"].items() if k != "scaleTargetRef"}
    assert spec.to_object_spec() == expected
    assert hpa_spec_from_object({"spec": spec.to_object_spec()}) == spec
    legacy = HPASpec(max_replicas=3, behavior=None)
    assert hpa_spec_from_object({"spec": legacy.to_object_spec()}) == legacy


def test_hpa_object_defaults_are_upstream_defaults():
    spec = hpa_spec_from_object(
        {
            "spec": {
                "maxReplicas": 4,
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 60}},
            }
        }
    )
    assert (spec.min_replicas, spec.target_cpu_utilization) == (1, 80)
    assert spec.behavior.scale_up.stabilization_window_seconds == 60
    assert spec.behavior.scale_up.policies == [
        policy("Pods", 4, 15),
        policy("Percent", 100, 15),
    ]
    assert spec.behavior.scale_down == ScaleDownRules()
    assert spec.behavior.scale_down.stabilization_window_seconds == 300
    assert hpa_spec_from_object({"spec": {"maxReplicas": 4}}).behavior is None


def _with(path, value):
    import copy

    obj = copy.deepcopy(DEPLOYED)
    *parents, last = path
    node = obj
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "named"),
    [
        (_with(["kind"], "Deployment"), "kind"),
        (_with(["apiVersion"], "autoscaling/v1"), "apiVersion"),
        (_with(["spec"], None), "spec"),
        (_with(["spec", "minReplicas"], 9), "minReplicas 9 is above maxReplicas 8"),
        (_with(["spec", "maxReplicas"], None), "maxReplicas: Field required"),
        (
            _with(
                ["spec", "metrics", 0, "resource", "target", "averageUtilization"], 0
            ),
            "metrics[0].resource.target.averageUtilization",
        ),
        (_with(["spec", "metrics", 0, "resource", "name"], "memory"), "cpu"),
        (_with(["spec", "metrics"], []), "exactly one metric"),
        (_with(["spec", "metrics"], "cpu"), "spec.metrics: expected a list"),
        (
            _with(["spec", "behavior", "scaleUp", "selectPolicy"], "Fastest"),
            "behavior.scaleUp.selectPolicy",
        ),
        (
            _with(["spec", "behavior", "scaleDown", "policies", 0, "periodSeconds"], 0),
            "behavior.scaleDown.policies.0.periodSeconds",
        ),
        (_with(["spec", "behavior", "scaleDown", "policies"], []), "policies"),
        (_with(["spec", "behavior", "scaleUp", "speed"], 3), "scaleUp.speed"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_hpa_object_names_the_field(obj, named):
    with pytest.raises(ConfigError, match="HorizontalPodAutoscaler") as info:
        hpa_spec_from_object(obj)
    assert named in str(info.value)


# Calibration from a measured capacity curve.

CURVE = pd.DataFrame(
    {
        "concurrency": [8, 1, 2, 4],
        "throughput_rps": [40.0, 10.0, 20.0, 38.0],
        "p50_ms": [200.0, 100.0, 100.0, 105.0],
        "p95_ms": [300.0, 120.0, 130.0, 150.0],
        # 0.05 idle + 0.01 core per rps, exactly.
        "cpu_cores": [0.45, 0.15, 0.25, 0.43],
    }
)


def test_calibration_fits_cpu_against_throughput():
    pod = calibrate_pod(CURVE, cpu_request_cores=1.0, cpu_limit_cores=2.0)
    assert pod.capacity_rps == 40
    assert pod.base_latency_ms == 100
    assert pod.cpu_per_rps == pytest.approx(0.01)
    assert pod.idle_cpu_cores == pytest.approx(0.05)
    assert (pod.cpu_request_cores, pod.cpu_limit_cores, pod.max_queue) == (1, 2, 256)


def test_calibration_without_cpu_assumes_saturation_at_capacity():
    curve = CURVE.drop(columns="cpu_cores")
    assert calibrate_pod(curve, 1.0, 2.0).cpu_per_rps == 2.0 / 40
    assert calibrate_pod(curve, 0.5).cpu_per_rps == 0.5 / 40
    unknown = CURVE.assign(cpu_cores=math.nan)
    assert calibrate_pod(unknown, 1.0, 2.0).cpu_per_rps == 2.0 / 40


def test_calibration_from_one_step_and_a_binding_limit(caplog):
    one = pd.DataFrame(
        {
            "concurrency": [4],
            "throughput_rps": [50.0],
            "p50_ms": [80.0],
            "cpu_cores": [2.5],
        }
    )
    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.autoscale"):
        pod = calibrate_pod(one, 1.0, 2.0, max_queue=10)
    assert pod.cpu_per_rps == 0.05
    assert pod.effective_capacity_rps == 40
    assert "caps a pod at 40.0 rps" in caplog.text


def test_calibrated_pod_drives_a_simulation():
    pod = calibrate_pod(CURVE, 1.0, 2.0)
    result = simulate(
        100.0,
        {"max_replicas": 10, "target_cpu_utilization": 30},
        pod,
        {"duration_s": 300},
    )
    assert result.max_replicas >= 3
    assert result.timeline["served_rps"].iloc[-1] == pytest.approx(100)


def test_pod_saturating_below_its_cpu_target_never_scales():
    # At its 40 rps capacity the calibrated pod uses 0.45 core, 45 % of its
    # request: a 60 % target is never reached, however many requests drop.
    pod = calibrate_pod(CURVE, 1.0, 2.0)
    result = simulate(
        100.0,
        {"max_replicas": 10, "target_cpu_utilization": 60},
        pod,
        {"duration_s": 300},
    )
    assert result.max_replicas == 1
    assert result.dropped_fraction > 0.5


@pytest.mark.parametrize(
    ("curve", "column"),
    [
        (CURVE.drop(columns="p50_ms"), "p50_ms"),
        (CURVE.assign(throughput_rps=[-1.0, 1, 2, 3]), "throughput_rps"),
        (CURVE.assign(concurrency=["a", 1, 2, 3]), "concurrency"),
        (CURVE.assign(throughput_rps=[1.0, math.nan, 2, 3]), "throughput_rps"),
        (CURVE.assign(throughput_rps=0.0), "throughput_rps"),
        (CURVE.assign(p50_ms=math.nan), "p50_ms"),
        (CURVE.assign(cpu_cores=[0.1, 0.4, 0.3, 0.2]), "cpu_cores"),
        (CURVE.assign(cpu_cores=math.inf), "cpu_cores"),
    ],
)
def test_bad_capacity_curve_names_the_column(curve, column):
    with pytest.raises(DataError) as info:
        calibrate_pod(curve, 1.0)
    assert info.value.column == column


def test_empty_capacity_curve_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        calibrate_pod(CURVE.iloc[:0], 1.0)


# Bad configuration.


@pytest.mark.parametrize(
    ("hpa", "pod", "config", "named"),
    [
        ({"max_replicas": 2, "min_replicas": 3}, {}, {}, "minReplicas 3"),
        ({"max_replicas": 2, "target_cpu_utilization": 0}, {}, {}, "target_cpu"),
        ({"max_replicas": 2, "targetCpuUtilization": 1001}, {}, {}, "targetCpu"),
        ({"max_replicas": 0}, {}, {}, "max_replicas"),
        ({"max_replicas": 2}, {"capacity_rps": -5}, {}, "capacity_rps"),
        ({"max_replicas": 2}, {"cpu_limit_cores": 0.5}, {}, "cpu_limit_cores 0.5"),
        ({"max_replicas": 2}, {"idle_cpu_cores": 2}, {}, "idle_cpu_cores 2"),
        ({"max_replicas": 2}, {"queue": 3}, {}, "queue: unknown key"),
        ({"max_replicas": 2}, {}, {"step_s": 0.7}, "sync_period_s 15.0"),
        ({"max_replicas": 2}, {}, {"metric_window_s": 10, "step_s": 4}, "sync"),
        ({"max_replicas": 2}, {}, {"metric_window_s": 7.5}, "metric_window_s 7.5"),
        ({"max_replicas": 2}, {}, {"pod_pending_s": 60}, "pod_pending_s 60"),
        ({"max_replicas": 2}, {}, {"tolerance": 1.5}, "tolerance"),
        ({"max_replicas": 2}, {}, {"duration_s": 1e9}, "steps"),
        ({"max_replicas": 2}, {}, {"initial_replicas": 0}, "initial_replicas"),
    ],
)
def test_bad_input_is_a_config_error_naming_the_field(hpa, pod, config, named):
    pod = {"capacity_rps": 10, "base_latency_ms": 5, "cpu_per_rps": 0.1, **pod}
    with pytest.raises(ConfigError, match="simulate") as info:
        simulate(1.0, hpa, pod, config)
    assert named in str(info.value)


def test_python_and_kubernetes_field_names_are_both_accepted():
    assert HPASpec(maxReplicas=3, targetCpuUtilization=70) == HPASpec(
        max_replicas=3, target_cpu_utilization=70
    )
