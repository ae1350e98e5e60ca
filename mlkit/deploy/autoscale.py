"""Simulate a Kubernetes HorizontalPodAutoscaler scaling the inference service.

For capacity planning, and for a scaling demo when no cluster is reachable. The
decision logic follows the upstream controller (``pkg/controller/podautoscaler``,
autoscaling/v2 semantics) step by step:

- Every ``sync_period_s`` the controller measures the average CPU of the pods
  relative to their CPU *request*, as integer percent, and recommends
  ``ceil(ready_pods * utilization / target)``, or no change when the ratio is
  within the tolerance. Pods that are pending, starting or whose readiness is
  too recent to have a full metric window are set aside; pods without a metric
  count as 0 % on a scale-up and 100 % (or the target, if higher) on a
  scale-down, unready pods as 0 % on a scale-up (:func:`recommended_replicas`).
- The recommendation is stabilized (the lowest of the scale-up window, the
  highest of the scale-down window), rate limited by the behavior's policies
  (:class:`HPAController`) and clamped to ``min_replicas..max_replicas``.

Around it, :func:`simulate` models the pods and the load: a new pod serves
after ``pod_startup_s``; a removed pod stops serving at once; offered requests
are shared by the ready pods, which serve up to their capacity and queue the
rest up to ``max_queue`` each; beyond that requests are dropped. A pod's CPU
follows the requests it serves (:class:`PodModel`, calibrated from a measured
capacity curve by :func:`calibrate_pod`).

The HPA settings come from :class:`HPASpec`, or from the very object that gets
deployed with :func:`hpa_spec_from_object`.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlkit.errors import (
    ConfigError,
    DataError,
    describe_validation_error,
    validate_config,
)

log = logging.getLogger(__name__)

__all__ = [
    "HPABehavior",
    "HPAController",
    "HPAScalingRules",
    "HPASpec",
    "LoadInput",
    "PodModel",
    "ScaleDownRules",
    "ScaleUpRules",
    "ScalingPolicy",
    "SimulationConfig",
    "SimulationResult",
    "calibrate_pod",
    "hpa_spec_from_object",
    "offered_load",
    "recommended_replicas",
    "simulate",
]

LoadInput = (
    float
    | Callable[[Any], Any]
    | Sequence[float]
    | Sequence[Sequence[float]]
    | np.ndarray
    | pd.Series
)
"""Requests per second over time, in one of these forms:

- a number: the same rate throughout;
- a callable of the time in seconds: called once with the array of step start
  times when it accepts an array, else once per step;
- a pandas Series indexed by time in seconds, or a sequence of
  ``(seconds, rps)`` pairs (a 2-column array): points interpolated linearly,
  held flat before the first and after the last;
- a flat sequence or 1-D array: one value per step.
"""

# The HPA's fields are named as in autoscaling/v2 (camelCase) and in Python
# (snake_case); both are accepted, and an error names a field as it was given.
_K8S_FIELDS = ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=to_camel,
    validate_by_name=True,
    validate_by_alias=True,
)

# Upstream bounds of autoscaling/v2 (validation.go): a policy period and a
# stabilization window of at most 30 minutes and one hour.
_MAX_PERIOD_S = 1800
_MAX_STABILIZATION_S = 3600
# Upstream default of a HorizontalPodAutoscaler without metrics.
_DEFAULT_TARGET_CPU = 80
# The most steps one simulation may hold in memory (a week at 0.1 s steps).
_MAX_STEPS = 6_048_000
# Age, in steps, of the pods that run when the simulation starts: long settled.
_SETTLED = -(10**12)


class ScalingPolicy(BaseModel):
    """One rate limit of a scaling direction (``HPAScalingPolicy``).

    Within any ``period_seconds``, at most ``value`` pods (type ``Pods``) or
    ``value`` percent of the replicas the period started with (``Percent``) may
    be added or removed.
    """

    model_config = _K8S_FIELDS

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=_MAX_PERIOD_S)


class HPAScalingRules(BaseModel):
    """How one direction scales (``HPAScalingRules``).

    ``stabilization_window_seconds``: the controller acts on the most
    conservative recommendation of this window (the lowest for a scale-up, the
    highest for a scale-down). ``select_policy``: ``Max`` takes the policy that
    allows the largest change, ``Min`` the smallest, ``Disabled`` forbids
    scaling in this direction. ``tolerance`` (the alpha field of Kubernetes
    1.33) overrides the controller-wide tolerance for this direction.

    Limitation: ``tolerance`` is read as a plain number ("0.05"); a Kubernetes
    quantity with a suffix ("50m") is refused.
    """

    model_config = _K8S_FIELDS

    stabilization_window_seconds: int = Field(ge=0, le=_MAX_STABILIZATION_S)
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: list[ScalingPolicy] = Field(min_length=1)
    tolerance: float | None = Field(default=None, ge=0, allow_inf_nan=False)


def _default_scale_up_policies() -> list[ScalingPolicy]:
    return [
        ScalingPolicy(type="Pods", value=4, period_seconds=15),
        ScalingPolicy(type="Percent", value=100, period_seconds=15),
    ]


def _default_scale_down_policies() -> list[ScalingPolicy]:
    return [ScalingPolicy(type="Percent", value=100, period_seconds=15)]


class ScaleUpRules(HPAScalingRules):
    """Scale-up rules; a field left out takes the upstream default: no
    stabilization, the larger of 4 pods or 100 % per 15 s."""

    stabilization_window_seconds: int = Field(default=0, ge=0, le=_MAX_STABILIZATION_S)
    policies: list[ScalingPolicy] = Field(
        default_factory=_default_scale_up_policies, min_length=1
    )


class ScaleDownRules(HPAScalingRules):
    """Scale-down rules; a field left out takes the upstream default: the
    highest recommendation of the last 300 s, then up to 100 % per 15 s."""

    stabilization_window_seconds: int = Field(
        default=300, ge=0, le=_MAX_STABILIZATION_S
    )
    policies: list[ScalingPolicy] = Field(
        default_factory=_default_scale_down_policies, min_length=1
    )


class HPABehavior(BaseModel):
    """``spec.behavior``: the scale-up and scale-down rules."""

    model_config = _K8S_FIELDS

    scale_up: ScaleUpRules = Field(default_factory=ScaleUpRules)
    scale_down: ScaleDownRules = Field(default_factory=ScaleDownRules)


class HPASpec(BaseModel):
    """The settings of a HorizontalPodAutoscaler on average CPU utilization.

    ``target_cpu_utilization`` is percent of the pods' CPU request. Upstream
    accepts any positive integer; values above 100 make sense when the CPU
    limit is above the request, so 1..1000 is accepted here (1000 % would need a
    limit ten times the request; more is taken for a typo). ``behavior`` None
    means an object without ``spec.behavior``, which the controller handles on
    its older path: the highest recommendation of the downscale stabilization
    window, at most ``max(2 * current, 4)`` replicas per sync, no scale-down
    rate limit.
    """

    model_config = _K8S_FIELDS

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(default=_DEFAULT_TARGET_CPU, ge=1, le=1000)
    behavior: HPABehavior | None = Field(default_factory=HPABehavior)

    @model_validator(mode="after")
    def _replica_range(self) -> HPASpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} is above maxReplicas "
                f"{self.max_replicas}"
            )
        return self

    def to_object_spec(self) -> dict[str, Any]:
        """The autoscaling/v2 ``spec`` fields this holds (all but
        ``scaleTargetRef``), as :func:`hpa_spec_from_object` reads them."""
        spec: dict[str, Any] = {
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": self.target_cpu_utilization,
                        },
                    },
                }
            ],
        }
        if self.behavior is not None:
            spec["behavior"] = self.behavior.model_dump(
                by_alias=True, exclude_none=True
            )
        return spec


class PodModel(BaseModel):
    """What one serving pod can do, as measured on the real server.

    ``capacity_rps``: requests per second at saturation. ``base_latency_ms``:
    latency of a request that does not wait. ``cpu_per_rps``: CPU cores used
    per request per second served, on top of ``idle_cpu_cores``. The pod's CPU
    is capped at ``cpu_limit_cores`` (None: no limit), which also caps what it
    can serve when the cap binds first (:attr:`effective_capacity_rps`).
    ``max_queue``: requests that may wait in one pod (the server's
    ``MLKIT_SERVE_MAX_QUEUE``); more are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity_rps: float = Field(gt=0, allow_inf_nan=False)
    base_latency_ms: float = Field(ge=0, allow_inf_nan=False)
    cpu_per_rps: float = Field(ge=0, allow_inf_nan=False)
    idle_cpu_cores: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cpu_request_cores: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    cpu_limit_cores: float | None = Field(default=2.0, gt=0, allow_inf_nan=False)
    max_queue: int = Field(default=256, ge=0)

    @model_validator(mode="after")
    def _cpu_fits(self) -> PodModel:
        limit = self.cpu_limit_cores
        if limit is not None and limit < self.cpu_request_cores:
            raise ValueError(
                f"cpu_limit_cores {limit} is below cpu_request_cores "
                f"{self.cpu_request_cores}; Kubernetes refuses such a pod"
            )
        if limit is not None and self.idle_cpu_cores >= limit:
            raise ValueError(
                f"idle_cpu_cores {self.idle_cpu_cores} reaches cpu_limit_cores "
                f"{limit}: the pod would have no CPU left to serve"
            )
        return self

    @property
    def effective_capacity_rps(self) -> float:
        """Requests per second one pod serves at most, within its CPU limit."""
        if self.cpu_limit_cores is None or self.cpu_per_rps == 0:
            return self.capacity_rps
        by_cpu = (self.cpu_limit_cores - self.idle_cpu_cores) / self.cpu_per_rps
        return min(self.capacity_rps, by_cpu)

    def cpu_cores(self, rps_per_pod: float) -> float:
        """CPU cores one pod uses while serving ``rps_per_pod``."""
        cores = self.idle_cpu_cores + rps_per_pod * self.cpu_per_rps
        return (
            cores if self.cpu_limit_cores is None else min(cores, self.cpu_limit_cores)
        )


def _multiple(value: float, step: float) -> bool:
    return abs(round(value / step) * step - value) <= 1e-9 * max(1.0, value)


class SimulationConfig(BaseModel):
    """Time and controller settings of a simulation.

    Time advances in steps of ``step_s``; the controller decides every
    ``sync_period_s`` (the kube-controller-manager flag
    ``--horizontal-pod-autoscaler-sync-period``), first at ``sync_period_s``.
    ``tolerance``, ``cpu_initialization_period_s``, ``initial_readiness_delay_s``
    and ``downscale_stabilization_s`` are the controller flags of the same
    names (the last one matters only for an HPA without behavior).
    ``metric_window_s`` is the window over which metrics-server averages a
    pod's CPU. A new pod is Pending (scheduling, image pull) for
    ``pod_pending_s``, then loads the model, and is Ready and serving
    ``pod_startup_s`` after it was created; durations round up to whole steps.
    ``initial_replicas`` (default: ``min_replicas``) pods run, long settled, at
    the start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    step_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sync_period_s: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    cpu_initialization_period_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    initial_readiness_delay_s: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    downscale_stabilization_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    metric_window_s: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    pod_startup_s: float = Field(default=45.0, ge=0, allow_inf_nan=False)
    pod_pending_s: float = Field(default=15.0, ge=0, allow_inf_nan=False)
    initial_replicas: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        for name in ("sync_period_s", "metric_window_s"):
            value = getattr(self, name)
            if not _multiple(value, self.step_s):
                raise ValueError(
                    f"{name} {value} is not a whole number of steps of "
                    f"step_s {self.step_s}; pick a step_s that divides it"
                )
        if self.pod_pending_s > self.pod_startup_s:
            raise ValueError(
                f"pod_pending_s {self.pod_pending_s} is longer than pod_startup_s "
                f"{self.pod_startup_s}, of which it is a part"
            )
        if self.duration_s / self.step_s > _MAX_STEPS:
            raise ValueError(
                f"duration_s / step_s is {self.duration_s / self.step_s:.0f} steps, "
                f"more than {_MAX_STEPS}; use a longer step_s"
            )
        return self

    @property
    def n_steps(self) -> int:
        """Number of steps of ``step_s`` that cover ``duration_s``."""
        return max(1, math.ceil(self.duration_s / self.step_s - 1e-9))

    def steps(self, seconds: float) -> int:
        """``seconds`` as a whole number of steps, rounded up."""
        return math.ceil(seconds / self.step_s - 1e-9)


def hpa_spec_from_object(obj: Mapping[str, Any]) -> HPASpec:
    """The HPASpec of an autoscaling/v2 HorizontalPodAutoscaler dict.

    Reads ``spec.minReplicas`` (default 1), ``spec.maxReplicas``, the CPU
    ``averageUtilization`` target of ``spec.metrics`` (default 80 % when there
    are no metrics, as upstream) and ``spec.behavior``, whose left-out fields
    take the upstream defaults. Raises ConfigError naming the field for another
    kind or API version, a metric other than one CPU utilization target (the
    only one simulated), or an invalid value.
    """
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"HorizontalPodAutoscaler: expected a mapping, got {type(obj).__name__}"
        )
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    source = "HorizontalPodAutoscaler" + (f" {name!r}" if name else "")
    for key, expected in (
        ("kind", "HorizontalPodAutoscaler"),
        ("apiVersion", "autoscaling/v2"),
    ):
        if key in obj and obj[key] != expected:
            raise ConfigError(
                f"{source}: {key}: expected {expected!r}, got {obj[key]!r}"
            )
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{source}: spec: expected a mapping, got {spec!r}")

    data: dict[str, Any] = {
        key: spec[key] for key in ("minReplicas", "maxReplicas") if key in spec
    }
    data["targetCpuUtilization"] = _cpu_target(spec.get("metrics"), source)
    data["behavior"] = spec.get("behavior")
    try:
        return HPASpec.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc).replace(
            "targetCpuUtilization",
            "metrics[0].resource.target.averageUtilization",
        )
        raise ConfigError(
            f"{source}: invalid HorizontalPodAutoscaler spec: {problems}"
        ) from exc


def _cpu_target(metrics: Any, source: str) -> Any:
    if metrics is None:
        return _DEFAULT_TARGET_CPU
    where = f"{source}: spec.metrics"
    if not isinstance(metrics, Sequence) or isinstance(metrics, str):
        raise ConfigError(f"{where}: expected a list, got {metrics!r}")
    if len(metrics) != 1:
        raise ConfigError(
            f"{where}: the simulator models exactly one metric (CPU "
            f"utilization), got {len(metrics)}"
        )
    metric = metrics[0] if isinstance(metrics[0], Mapping) else {}
    resource = metric.get("resource")
    resource = resource if isinstance(resource, Mapping) else {}
    target = resource.get("target")
    if (
        metric.get("type") != "Resource"
        or resource.get("name") != "cpu"
        or not isinstance(target, Mapping)
        or target.get("type") != "Utilization"
        or "averageUtilization" not in target
    ):
        raise ConfigError(
            f"{where}[0]: expected a Resource metric on cpu with a Utilization "
            f"target and averageUtilization, got {metrics[0]!r}"
        )
    return target["averageUtilization"]


def recommended_replicas(
    current_replicas: int,
    ready_usage_milli: Sequence[int] | np.ndarray,
    request_milli: int,
    target_utilization: int,
    *,
    unready_pods: int = 0,
    missing_pods: int = 0,
    tolerance: float | tuple[float, float] = 0.1,
) -> tuple[int, int] | None:
    """The replica count the CPU metric asks for, and the utilization it saw.

    ``ready_usage_milli`` holds the CPU usage, in millicores, of each pod whose
    sample counts; every pod requests ``request_milli``. ``unready_pods`` were
    set aside (pending, starting, or ready too recently); ``missing_pods`` run
    but have no metric yet. ``tolerance`` is one value or ``(scale_down,
    scale_up)``. Returns ``(replicas, utilization_percent)``, or None when no
    pod has a usable sample (the controller then skips the sync).

    As upstream: utilization is integer percent of the summed requests; with
    no set-aside pods the answer is ``ceil(ready * utilization / target)``;
    otherwise missing pods count as 0 % on a scale-up and as
    ``max(100, target)`` % on a scale-down, unready pods as 0 % on a scale-up,
    and the count stays put when that flips the direction or lands within the
    tolerance.
    """
    down_tol, up_tol = (
        tolerance if isinstance(tolerance, tuple) else (tolerance, tolerance)
    )

    def within(ratio: float) -> bool:
        return 1.0 - down_tol <= ratio <= 1.0 + up_tol

    counted = len(ready_usage_milli)
    if counted == 0:
        return None
    total = int(sum(int(u) for u in ready_usage_milli))
    utilization = total * 100 // (request_milli * counted)
    ratio = utilization / target_utilization

    scale_up_with_unready = unready_pods > 0 and ratio > 1.0
    if not scale_up_with_unready and missing_pods == 0:
        if within(ratio):
            return current_replicas, utilization
        return math.ceil(ratio * counted), utilization

    # A pod without a metric is assumed busy on the way down and idle on the
    # way up, so that it damps the change rather than amplifies it.
    if missing_pods > 0 and ratio < 1.0:
        fallback = request_milli * max(100, target_utilization) // 100
        total += missing_pods * fallback
        counted += missing_pods
    elif missing_pods > 0 and ratio > 1.0:
        counted += missing_pods
    if scale_up_with_unready:
        counted += unready_pods

    new_ratio = (total * 100 // (request_milli * counted)) / target_utilization
    if within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current_replicas, utilization
    replicas = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and replicas > current_replicas) or (
        new_ratio > 1.0 and replicas < current_replicas
    ):
        return current_replicas, utilization
    return replicas, utilization


class HPAController:
    """The controller's normalization of a recommendation, for one HPA.

    Holds what the upstream controller remembers between syncs: past
    recommendations (for the stabilization windows) and past scale events
    (for the rate-limiting policies). :meth:`reconcile` is one sync.
    """

    def __init__(self, spec: HPASpec, *, downscale_stabilization_s: float = 300.0):
        self.spec = spec
        self.downscale_stabilization_s = downscale_stabilization_s
        # (time, replicas) recommendations; [time, change, outdated] events.
        self._recommendations: list[tuple[float, int]] = []
        self._up_events: list[list[Any]] = []
        self._down_events: list[list[Any]] = []

    def reconcile(
        self, now_s: float, current_replicas: int, metric_replicas: int | None
    ) -> int:
        """The replica count to set at ``now_s``.

        ``metric_replicas`` is the metric's recommendation
        (:func:`recommended_replicas`), None when it could not be computed, in
        which case nothing changes unless the count is outside min..max.
        """
        spec = self.spec
        if not self._recommendations:
            # The controller's first sync records the current count, so a new
            # HPA does not scale down before a full stabilization window.
            self._recommendations.append((now_s, current_replicas))

        if current_replicas == 0 and spec.min_replicas != 0:
            return 0  # upstream: a target scaled to zero disables autoscaling
        if current_replicas > spec.max_replicas:
            desired = spec.max_replicas
        elif current_replicas < spec.min_replicas:
            desired = spec.min_replicas
        elif metric_replicas is None:
            return current_replicas
        elif spec.behavior is None:
            desired = self._normalize_legacy(
                now_s, current_replicas, max(0, metric_replicas)
            )
        else:
            desired = self._normalize(now_s, current_replicas, max(0, metric_replicas))

        if desired != current_replicas and spec.behavior is not None:
            self._store_event(now_s, current_replicas, desired)
        return desired

    def _normalize(self, now: float, current: int, desired: int) -> int:
        behavior = self.spec.behavior
        assert behavior is not None
        up, down = behavior.scale_up, behavior.scale_down

        # Stabilize: no higher than the lowest recommendation of the scale-up
        # window, no lower than the highest of the scale-down window.
        up_cut = now - up.stabilization_window_seconds
        down_cut = now - down.stabilization_window_seconds
        up_rec = down_rec = desired
        old = None
        for i, (t, rec) in enumerate(self._recommendations):
            if t > up_cut:
                up_rec = min(up_rec, rec)
            if t > down_cut:
                down_rec = max(down_rec, rec)
            if t < up_cut and t < down_cut:
                old = i
        if old is None:
            self._recommendations.append((now, desired))
        else:
            self._recommendations[old] = (now, desired)
        stabilized = min(max(current, up_rec), down_rec)

        # Rate limit by the policies, then clamp to min..max.
        if stabilized > current:
            limit = max(self._scale_up_limit(now, current, up), current)
            return min(stabilized, self.spec.max_replicas, limit)
        if stabilized < current:
            limit = min(self._scale_down_limit(now, current, down), current)
            return max(stabilized, self.spec.min_replicas, limit)
        return stabilized

    def _normalize_legacy(self, now: float, current: int, desired: int) -> int:
        cutoff = now - self.downscale_stabilization_s
        stabilized = desired
        old = None
        for i, (t, rec) in enumerate(self._recommendations):
            if t < cutoff:
                old = i
            elif rec > stabilized:
                stabilized = rec
        if old is None:
            self._recommendations.append((now, desired))
        else:
            self._recommendations[old] = (now, desired)
        scale_up_limit = int(max(2.0 * current, 4.0))
        if stabilized < self.spec.min_replicas:
            return self.spec.min_replicas
        return min(stabilized, self.spec.max_replicas, scale_up_limit)

    def _period_start(self, now: float, current: int, period: int) -> int:
        cutoff = now - period
        added = sum(e[1] for e in self._up_events if e[0] > cutoff)
        removed = sum(e[1] for e in self._down_events if e[0] > cutoff)
        return current - added + removed

    def _scale_up_limit(self, now: float, current: int, rules: HPAScalingRules) -> int:
        if rules.select_policy == "Disabled":
            return current
        pick = min if rules.select_policy == "Min" else max
        limits = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                limits.append(start + policy.value)
            else:
                # Rounded up, so that a small deployment can always grow.
                limits.append(math.ceil(start * (1 + policy.value / 100)))
        return pick(limits)

    def _scale_down_limit(
        self, now: float, current: int, rules: HPAScalingRules
    ) -> int:
        if rules.select_policy == "Disabled":
            return current
        # For a scale-down the smallest change is the highest replica count.
        pick = max if rules.select_policy == "Min" else min
        limits = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                limits.append(start - policy.value)
            else:
                limits.append(int(start * (1 - policy.value / 100)))
        return pick(limits)

    def _store_event(self, now: float, previous: int, new: int) -> None:
        behavior = self.spec.behavior
        assert behavior is not None
        if new > previous:
            events, rules, change = self._up_events, behavior.scale_up, new - previous
        else:
            events, rules, change = (
                self._down_events,
                behavior.scale_down,
                previous - new,
            )
        # As upstream, one event older than every policy period is reused in
        # place; the others stay (and still count for the other direction's
        # longer periods).
        cutoff = now - max(p.period_seconds for p in rules.policies)
        old = None
        for i, event in enumerate(events):
            if event[0] < cutoff:
                event[2] = True
            if event[2]:
                old = i
        if old is None:
            events.append([now, change, False])
        else:
            events[old] = [now, change, False]


def _tolerances(spec: HPASpec, default: float) -> tuple[float, float]:
    """(scale-down, scale-up) tolerance: the behavior's own, else ``default``."""
    if spec.behavior is None:
        return default, default
    down, up = spec.behavior.scale_down.tolerance, spec.behavior.scale_up.tolerance
    return (default if down is None else down, default if up is None else up)


def offered_load(load: LoadInput, config: SimulationConfig) -> np.ndarray:
    """Requests per second offered during each step of ``config``.

    ``load`` takes any :data:`LoadInput` form. Raises DataError when the
    values are not finite and non-negative, a per-step sequence does not have
    one value per step, or points are not in increasing time order.
    """
    n = config.n_steps
    times = np.arange(n) * config.step_s
    if isinstance(load, int | float) and not isinstance(load, bool):
        rps = np.full(n, float(load))
    elif isinstance(load, pd.Series):
        rps = _interpolate(load.index.to_numpy(float), load.to_numpy(float), times)
    elif callable(load):
        rps = _call_profile(load, times)
    else:
        try:
            values = np.asarray(load, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataError(
                "load profile is not numeric",
                expected="numbers per step or (seconds, rps) pairs",
                got=type(load).__name__,
            ) from exc
        if values.ndim == 2 and values.shape[1] == 2:
            rps = _interpolate(values[:, 0], values[:, 1], times)
        elif values.ndim == 1:
            if len(values) != n:
                raise DataError(
                    "load profile has the wrong number of steps",
                    expected=f"{n} values (duration_s / step_s)",
                    got=str(len(values)),
                    hint="give (seconds, rps) points to interpolate instead",
                )
            rps = values
        else:
            raise DataError(
                "load profile has the wrong shape",
                expected="one value per step or (seconds, rps) pairs",
                got=f"an array of shape {values.shape}",
            )
    if not np.all(np.isfinite(rps)) or np.any(rps < 0):
        bad = np.flatnonzero(~np.isfinite(rps) | (rps < 0))[0]
        raise DataError(
            "load profile must be finite and non-negative",
            expected="requests per second >= 0",
            got=f"{rps[bad]!r} at {times[bad]:g} s",
        )
    return rps


def _call_profile(load: Callable[[Any], Any], times: np.ndarray) -> np.ndarray:
    # Try the whole array at once. A scalar function (math.sin, an `if` on t)
    # raises, and one that returns a single number may be a constant or a
    # reduction such as np.mean(t): both are called once per step instead.
    try:
        values = np.asarray(load(times), dtype=float)
    except (TypeError, ValueError):
        values = None
    if values is not None and values.shape == times.shape:
        return values
    return np.array([float(load(float(t))) for t in times])


def _interpolate(
    point_times: np.ndarray, point_rps: np.ndarray, times: np.ndarray
) -> np.ndarray:
    if len(point_times) == 0:
        raise DataError("load profile has no points", expected="(seconds, rps) pairs")
    if not np.all(np.isfinite(point_times)) or np.any(np.diff(point_times) <= 0):
        raise DataError(
            "load profile point times must be finite and strictly increasing",
            got=str(point_times.tolist()[:10]),
        )
    return np.interp(times, point_times, point_rps)


@dataclass(frozen=True)
class SimulationResult:
    """The outcome of :func:`simulate`.

    ``timeline`` has one row per step, the state during
    ``[time_s, time_s + step_s)``: ``offered_rps``, ``served_rps``,
    ``dropped`` (requests refused in the step because every queue was full),
    ``replicas`` (ready, serving pods), ``starting_pods`` (created, not
    yet ready), ``desired_replicas`` (the count the HPA set),
    ``recommended_replicas`` (the metric's raw recommendation at the last sync,
    before stabilization and policies), ``utilization`` (CPU of a serving pod
    as a fraction of its request), ``hpa_utilization_pct`` (what the HPA
    measured at the last sync), ``queue`` (requests waiting, all pods) and
    ``latency_ms_estimate``. Requests are a fluid: counts can be fractional.
    """

    timeline: pd.DataFrame
    hpa: HPASpec
    pod: PodModel
    config: SimulationConfig

    @property
    def max_replicas(self) -> int:
        """The most ready pods at any time."""
        return int(self.timeline["replicas"].max())

    @property
    def total_offered(self) -> float:
        """Requests offered over the whole run."""
        return float(self.timeline["offered_rps"].sum() * self.config.step_s)

    @property
    def total_dropped(self) -> float:
        """Requests dropped over the whole run."""
        return float(self.timeline["dropped"].sum())

    @property
    def dropped_fraction(self) -> float:
        """Share of the offered requests that were dropped (0 with no load)."""
        offered = self.total_offered
        return self.total_dropped / offered if offered > 0 else 0.0

    def time_to_replicas(self, replicas: int) -> float | None:
        """Seconds from the start until ``replicas`` pods were ready, or None."""
        reached = np.flatnonzero(self.timeline["replicas"].to_numpy() >= replicas)
        return float(self.timeline["time_s"].iat[reached[0]]) if len(reached) else None

    @property
    def load_end_s(self) -> float | None:
        """When the offered load settled at its final level (None: it never
        changed)."""
        offered = self.timeline["offered_rps"].to_numpy()
        changed = np.flatnonzero(offered != offered[-1])
        if len(changed) == 0:
            return None
        return float(self.timeline["time_s"].iat[changed[-1] + 1])

    @property
    def time_back_at_min_s(self) -> float | None:
        """Seconds from :attr:`load_end_s` until the deployment was back at
        ``min_replicas`` for good (no pod starting), or None when it never was."""
        end = self.load_end_s
        if end is None:
            return None
        frame = self.timeline
        at_min = (frame["replicas"] == self.hpa.min_replicas) & (
            frame["starting_pods"] == 0
        )
        not_at_min = np.flatnonzero(~at_min.to_numpy())
        first = 0 if len(not_at_min) == 0 else not_at_min[-1] + 1
        if first >= len(frame):
            return None
        return max(0.0, float(frame["time_s"].iat[first]) - end)

    def summary(self) -> dict[str, Any]:
        """The headline figures, JSON-ready."""
        return {
            "duration_s": self.config.duration_s,
            "max_replicas": self.max_replicas,
            "total_offered": round(self.total_offered, 3),
            "total_dropped": round(self.total_dropped, 3),
            "dropped_fraction": round(self.dropped_fraction, 6),
            "max_latency_ms_estimate": round(
                float(self.timeline["latency_ms_estimate"].max()), 3
            ),
            "load_end_s": self.load_end_s,
            "time_back_at_min_s": self.time_back_at_min_s,
        }


def simulate(
    load: LoadInput,
    hpa: HPASpec | Mapping[str, Any],
    pod: PodModel | Mapping[str, Any],
    config: SimulationConfig | Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Run the HPA against ``load`` and return the timeline.

    ``hpa``, ``pod`` and ``config`` may be mappings, validated first
    (ConfigError naming every bad field); ``load`` is a :data:`LoadInput`
    (DataError when unusable).
    """
    hpa = validate_config(
        HPASpec, hpa, what="HPA spec", source="simulate", empty_ok=False
    )
    pod = validate_config(
        PodModel, pod, what="pod model", source="simulate", empty_ok=False
    )
    config = validate_config(
        SimulationConfig, config, what="simulation config", source="simulate"
    )
    offered = offered_load(load, config)
    reachable = (pod.cpu_limit_cores or math.inf) / pod.cpu_request_cores * 100
    if hpa.target_cpu_utilization >= reachable:
        log.warning(
            "target CPU utilization %d %% is at or above what the CPU limit allows "
            "(%.0f %% of the request): the HPA will never scale up",
            hpa.target_cpu_utilization,
            reachable,
        )
    frame = _run(offered, hpa, pod, config)
    result = SimulationResult(timeline=frame, hpa=hpa, pod=pod, config=config)
    log.info(
        "simulated %.0f s in %d steps: up to %d replicas, %.0f of %.0f requests "
        "dropped",
        config.duration_s,
        len(frame),
        result.max_replicas,
        result.total_dropped,
        result.total_offered,
    )
    return result


def _run(
    offered: np.ndarray, hpa: HPASpec, pod: PodModel, config: SimulationConfig
) -> pd.DataFrame:
    """The step loop: a scalar state per step, per-pod work only at syncs.

    Limitation: requests are a fluid at the offered rate, so Poisson bursts
    within a step and the queueing they cause below capacity are not modelled.
    Limitation: the ready pods share one queue, as if every request went to the
    least busy pod; a Service spreads requests at random, so a new pod starts
    empty while older ones may still hold a backlog. When pods are removed, the
    requests queued beyond what the remaining pods may hold are counted as
    dropped, although the server would finish them while draining.
    Limitation: the controller syncs exactly every sync_period_s and reads a
    CPU sample that ends at the sync; a real controller also waits for the
    next metrics-server scrape, so it reacts up to one scrape later.
    """
    dt = config.step_s
    n = len(offered)
    sync_steps = round(config.sync_period_s / dt)
    startup = config.steps(config.pod_startup_s)
    controller = HPAController(
        hpa, downscale_stabilization_s=config.downscale_stabilization_s
    )
    metrics = _MetricView(hpa, pod, config)
    capacity = pod.effective_capacity_rps * dt

    # Creation step of every pod, oldest first; the newest are removed first,
    # as the ReplicaSet controller prefers pods that are not (long) ready.
    created = [_SETTLED] * (config.initial_replicas or hpa.min_replicas)
    queue = 0.0
    recommended = math.nan
    measured = math.nan
    cpu_sum = [0.0]  # running sum of a serving pod's CPU, for window means

    columns: dict[str, list[float]] = {
        name: []
        for name in (
            "served_rps",
            "dropped",
            "replicas",
            "desired_replicas",
            "starting_pods",
            "recommended_replicas",
            "utilization",
            "hpa_utilization_pct",
            "queue",
            "latency_ms_estimate",
        )
    }
    for i in range(n):
        if i > 0 and i % sync_steps == 0:
            current = len(created)
            sample = metrics.recommend(i, created, cpu_sum, current)
            if sample is not None:
                recommended, measured = sample
            desired = controller.reconcile(
                i * dt, current, None if sample is None else sample[0]
            )
            if desired > current:
                created.extend([i] * (desired - current))
            elif desired < current:
                del created[desired:]

        # At least min_replicas pods serve: the settled pods of the start are
        # the oldest and so the last to be removed.
        ready = bisect.bisect_right(created, i - startup)
        waiting = queue + offered[i] * dt
        served = min(waiting, ready * capacity)
        queue = waiting - served
        dropped = max(0.0, queue - ready * pod.max_queue)
        queue -= dropped
        cpu = pod.cpu_cores(served / dt / ready)
        # A request arriving now waits for the queue ahead of it to drain at
        # full capacity, then takes the unloaded latency.
        latency = pod.base_latency_ms + 1000.0 * queue / (ready * capacity / dt)
        cpu_sum.append(cpu_sum[-1] + cpu)

        columns["served_rps"].append(served / dt)
        columns["dropped"].append(dropped)
        columns["replicas"].append(ready)
        columns["desired_replicas"].append(len(created))
        columns["starting_pods"].append(len(created) - ready)
        columns["recommended_replicas"].append(recommended)
        columns["utilization"].append(cpu / pod.cpu_request_cores)
        columns["hpa_utilization_pct"].append(measured)
        columns["queue"].append(queue)
        columns["latency_ms_estimate"].append(latency)

    frame = pd.DataFrame(
        {"time_s": np.arange(n) * dt, "offered_rps": offered, **columns}
    )
    for name in ("replicas", "desired_replicas", "starting_pods"):
        frame[name] = frame[name].astype("int64")
    return frame


class _MetricView:
    """What the controller sees of the pods at a sync (``groupPods`` upstream).

    Each pod is classified by its age in steps: Pending pods and pods whose
    CPU samples the controller distrusts are unready; running pods without a
    metric yet are missing; the rest count, with the CPU a serving pod used,
    on average, over the metric window before the sync.
    """

    def __init__(self, hpa: HPASpec, pod: PodModel, config: SimulationConfig):
        self.hpa = hpa
        self.pod = pod
        self.tolerance = _tolerances(hpa, config.tolerance)
        self.pending = config.steps(config.pod_pending_s)
        self.startup = config.steps(config.pod_startup_s)
        self.window = round(config.metric_window_s / config.step_s)
        self.initialization = config.steps(config.cpu_initialization_period_s)
        # Past the initialization period, a pod that has never been ready is
        # set aside only when its Ready condition changed within the initial
        # readiness delay of its start, which for a pod that never became
        # ready is at its start: so whenever the delay is not zero.
        self.never_ready_ignored = config.initial_readiness_delay_s > 0
        self.request_milli = round(pod.cpu_request_cores * 1000)

    def group(self, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Classify pods by age in steps: ``(counted, serving, missing,
        unready)``, the first two masks over the counted pods' ages."""
        pending = ages < self.pending
        has_metric = ages >= self.pending + self.window
        ready = ages >= self.startup
        # Within the initialization period a sample counts only from a pod
        # that is ready and has been for a whole metric window.
        fresh = ages < self.startup + self.window
        in_initialization = ages < self.initialization
        distrusted = np.where(
            in_initialization, ~ready | fresh, ~ready & self.never_ready_ignored
        )
        counted = ~pending & has_metric & ~distrusted
        missing = int(np.count_nonzero(~pending & ~has_metric))
        unready = int(np.count_nonzero(pending | (has_metric & distrusted)))
        return counted, ready[counted], missing, unready

    def recommend(
        self, step: int, created: list[int], cpu_sum: list[float], current: int
    ) -> tuple[int, int] | None:
        """The metric's recommendation at ``step`` (see recommended_replicas)."""
        ages = step - np.asarray(created, dtype=np.int64)
        _, serving, missing, unready = self.group(ages)
        first = max(0, step - self.window)
        serving_cpu = (cpu_sum[step] - cpu_sum[first]) / (step - first)
        # Limitation: a pod counted while not ready (only possible when the
        # start-up outlasts the CPU initialization period) is taken as idle;
        # the CPU it burns loading the model is not modelled.
        usage = np.where(serving, serving_cpu, self.pod.cpu_cores(0.0))
        usage_milli = np.ceil(np.round(usage * 1000, 6)).astype(np.int64)
        return recommended_replicas(
            current,
            usage_milli,
            self.request_milli,
            self.hpa.target_cpu_utilization,
            unready_pods=unready,
            missing_pods=missing,
            tolerance=self.tolerance,
        )


# The columns calibrate_pod reads.
_CURVE_REQUIRED = ("concurrency", "throughput_rps", "p50_ms")


def calibrate_pod(
    measurements: pd.DataFrame,
    cpu_request_cores: float,
    cpu_limit_cores: float | None = None,
    *,
    max_queue: int = 256,
) -> PodModel:
    """A PodModel from a capacity curve measured against the real server.

    ``measurements`` has one row per load step of the load generator:

    - ``concurrency``: requests kept in flight during the step;
    - ``throughput_rps``: requests completed per second;
    - ``p50_ms``: median latency (``p95_ms`` may be there; it is not used);
    - ``cpu_cores`` (optional): CPU cores the server process used during the
      step (CPU seconds / wall seconds), e.g. from ``process_cpu_seconds_total``.

    Capacity is the highest throughput, base latency the median latency at the
    lowest concurrency. With ``cpu_cores``, a straight-line fit of CPU against
    throughput gives ``cpu_per_rps`` (slope) and ``idle_cpu_cores``
    (intercept); without it, CPU is assumed to saturate exactly at capacity:
    ``cpu_per_rps = cpu_limit / capacity`` (the request when there is no
    limit). Raises DataError for a missing column, a non-numeric or negative
    value, an empty table, or CPU that does not grow with throughput.
    """
    if not isinstance(measurements, pd.DataFrame) or measurements.empty:
        raise DataError("capacity curve is empty", expected="one row per load step")
    for column in _CURVE_REQUIRED:
        if column not in measurements:
            raise DataError(
                "capacity curve lacks a column",
                column=column,
                expected=", ".join(_CURVE_REQUIRED) + " (and optionally cpu_cores)",
                got=", ".join(map(str, measurements.columns)),
            )
    curve = {c: _numeric(measurements, c) for c in _CURVE_REQUIRED}
    for column in ("concurrency", "throughput_rps"):
        if np.isnan(curve[column]).any():
            raise DataError(
                "capacity curve has a missing value", column=column, got="NaN"
            )

    throughput = curve["throughput_rps"]
    capacity = float(throughput.max())
    if capacity <= 0:
        raise DataError(
            "capacity curve never completes a request",
            column="throughput_rps",
            expected="a step with throughput above 0",
        )
    latencies = curve["p50_ms"]
    usable = ~np.isnan(latencies)
    if not usable.any():
        raise DataError("capacity curve has no latency", column="p50_ms", got="all NaN")
    lowest = np.argmin(np.where(usable, curve["concurrency"], np.inf))
    base_latency = float(latencies[lowest])

    cpu_per_rps, idle = _cpu_fit(measurements, throughput)
    if cpu_per_rps is None:
        saturating = cpu_limit_cores or cpu_request_cores
        cpu_per_rps = saturating / capacity
        log.info(
            "capacity curve has no cpu_cores: assuming %.2f cores at %.1f rps",
            saturating,
            capacity,
        )
    model = validate_config(
        PodModel,
        {
            "capacity_rps": capacity,
            "base_latency_ms": base_latency,
            "cpu_per_rps": cpu_per_rps,
            "idle_cpu_cores": idle,
            "cpu_request_cores": cpu_request_cores,
            "cpu_limit_cores": cpu_limit_cores,
            "max_queue": max_queue,
        },
        what="pod model",
        source="calibrate_pod",
    )
    if model.effective_capacity_rps < capacity:
        log.warning(
            "the CPU limit of %.2f cores caps a pod at %.1f rps, below the "
            "measured %.1f rps",
            cpu_limit_cores,
            model.effective_capacity_rps,
            capacity,
        )
    log.info(
        "calibrated pod: %.1f rps, %.1f ms, %.4f cores per rps + %.3f idle",
        capacity,
        base_latency,
        cpu_per_rps,
        idle,
    )
    return model


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(
            "capacity curve value is not a number", column=column, got=str(exc)
        ) from exc
    finite = values[~np.isnan(values)]
    if np.isinf(finite).any() or (finite < 0).any():
        raise DataError(
            "capacity curve value must be finite and non-negative",
            column=column,
            got=str(finite[np.isinf(finite) | (finite < 0)][0]),
        )
    return values


def _cpu_fit(
    measurements: pd.DataFrame, throughput: np.ndarray
) -> tuple[float | None, float]:
    """Slope and intercept of CPU cores against throughput; (None, 0) when the
    curve has no CPU measurements."""
    if "cpu_cores" not in measurements:
        return None, 0.0
    cpu = _numeric(measurements, "cpu_cores")
    known = ~np.isnan(cpu)
    if not known.any():
        return None, 0.0
    x, y = throughput[known], cpu[known]
    if len(np.unique(x)) < 2:
        # One throughput level: a line through the origin.
        slope = float(y.mean() / x.mean()) if x.mean() > 0 else 0.0
        intercept = 0.0
    else:
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    if slope <= 0:
        raise DataError(
            "CPU does not grow with throughput",
            column="cpu_cores",
            expected="more CPU at higher throughput",
            got=f"slope {slope:.4g} cores per rps",
            hint="measure the server process's CPU, not the load generator's",
        )
    return slope, max(0.0, intercept)
