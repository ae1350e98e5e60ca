"""Operations on a live Kubernetes cluster: apply the deployment's objects, wait
for the rollout, watch the autoscaler, find the service's address.

``connect`` loads a kubeconfig (or the in-cluster service account) and checks
at once that the API server answers, so that a wrong file, context or address
fails before anything is applied. The returned :class:`Cluster` talks to the
server through the official ``kubernetes`` client; it is synchronous, so it
runs in a notebook cell without any event loop.

Objects are applied with server-side apply under one field manager (``mlkit``):
the server merges each object with what is live and records which fields
mlkit owns. ``force=True`` (the default) takes over fields that another
manager set, because the deployment's YAML is the source of truth; a field
mlkit omits (``spec.replicas`` of a Deployment scaled by an autoscaler) keeps
the value its other manager gave it.

The ``kubernetes`` package is imported only when a function needs it, so that
importing this module (and ``mlkit.deploy``) stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit.errors import ConfigError, MlkitError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Indirections so that tests can run the polling loops on a fake clock.
_monotonic = time.monotonic
_sleep = time.sleep

FIELD_MANAGER = "mlkit"
SAMPLE_COLUMNS = (
    "time_s",
    "replicas",
    "ready_replicas",
    "available_replicas",
    "desired_replicas",
    "cpu_utilization",
    "cpu_millicores",
    "pods_pending",
    "pods_running",
    "pods_succeeded",
    "pods_failed",
    "pods_unknown",
    "pods_terminating",
)
_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
# How many not-ready pods a rollout failure report describes, with how many
# of each pod's most recent events: enough to see the cause, short enough
# to read.
_REPORT_PODS = 5
_REPORT_EVENTS = 3
# Seconds to wait for a TCP connection to the API server.
_CONNECT_TIMEOUT_S = 10.0

# What to do about the usual reasons a pod does not become ready.
_HINTS = {
    "ImagePullBackOff": "check the image name and tag, and that the nodes may "
    "pull from its registry",
    "ErrImagePull": "check the image name and tag, and that the nodes may pull "
    "from its registry",
    "InvalidImageName": "the image reference is malformed",
    "CrashLoopBackOff": "the container keeps exiting: read its log with "
    "`kubectl logs --previous -n <namespace> <pod>`",
    "OOMKilled": "the container ran out of memory: raise its memory limit",
    "CreateContainerConfigError": "a referenced ConfigMap or Secret (key) is missing",
    "Unschedulable": "no node has the requested cpu/memory free: lower the "
    "requests or add nodes",
}


class ClusterError(MlkitError):
    """The API server refused or failed a request, or the cluster is not in
    the expected state. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnreachable(ClusterError):
    """No answer from the API server at ``server`` (wrong address, network,
    VPN or firewall, TLS failure, or a cluster that is down)."""

    def __init__(self, server: str, what: str, detail: object) -> None:
        self.server = server
        super().__init__(
            f"{what}: cannot reach the Kubernetes API server at {server} "
            f"({detail}); check that the cluster is running and that this "
            "machine can reach it (network, VPN, authorized networks)"
        )


@dataclass(frozen=True)
class PodReport:
    """Why one pod is not ready: its phase, restarts, the waiting/terminated
    reasons of its containers, failed conditions and its latest events."""

    name: str
    phase: str
    ready: bool
    restarts: int
    problems: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        details = "; ".join(self.problems) or "no container problem reported"
        lines = [
            f"  pod {self.name}: phase {self.phase}, restarts {self.restarts}; "
            f"{details}"
        ]
        lines += [f"    event {event}" for event in self.events]
        return "\n".join(lines)


@dataclass(frozen=True)
class RolloutStatus:
    """The state of a Deployment's rollout at one poll.

    ``replicas`` is the desired count (``spec.replicas``); the other counts are
    the controller's ``status``. ``complete`` is True when every desired
    replica runs the current template and is available; ``failed`` when the
    controller gave up (ProgressDeadlineExceeded). ``message`` says which.
    """

    namespace: str
    name: str
    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    complete: bool
    failed: bool
    message: str
    elapsed_s: float = 0.0
    polls: int = 0


class RolloutFailed(ClusterError):
    """A Deployment did not finish rolling out: it timed out or the controller
    reported ProgressDeadlineExceeded. ``status`` is its last RolloutStatus and
    ``pods`` describes the pods that were not ready."""

    def __init__(
        self, message: str, rollout: RolloutStatus, pods: Sequence[PodReport]
    ) -> None:
        super().__init__(message)
        self.rollout = rollout
        self.pods = tuple(pods)


@dataclass(frozen=True)
class AppliedObject:
    """One object after server-side apply: ``created`` is True when the apply
    created it, ``live`` is the object as the server stored it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    created: bool
    uid: str | None
    resource_version: str | None
    generation: int | None
    live: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def connect(
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    request_timeout_s: float = 30.0,
) -> Cluster:
    """A Cluster for ``context`` of the ``kubeconfig`` file, checked to answer.

    With no ``kubeconfig``, a process running in a pod uses its service
    account; elsewhere the ``KUBECONFIG`` variable or ``~/.kube/config`` is
    read, as kubectl does. ``context`` None means the file's current context.
    ``request_timeout_s`` bounds every request's wait for an answer.

    Raises ConfigError when the file is missing, unreadable or lacks the
    context, ClusterUnreachable when the server does not answer and
    ClusterError when it rejects the credentials.
    """
    api, source = _load_api_client(kubeconfig, context)
    cluster = Cluster(
        api, source=source, context=context, request_timeout_s=request_timeout_s
    )
    try:
        version = cluster.check()
    except BaseException:
        cluster.close()
        raise
    log.info(
        "connected to %s (Kubernetes %s) from %s",
        cluster.server,
        version.get("gitVersion", "?"),
        source,
    )
    return cluster


def _load_api_client(
    kubeconfig: str | Path | None, context: str | None
) -> tuple[Any, str]:
    """The configured kubernetes ApiClient and a description of its source."""
    import yaml
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise ConfigError(
                f"in-cluster service account: cannot configure the client: {exc}; "
                "pass a kubeconfig file instead"
            ) from exc
        return client.ApiClient(configuration), "the in-cluster service account"

    if kubeconfig is None:
        # Read KUBECONFIG now: the client reads it once, when it is imported.
        # Several files separated by os.pathsep are merged, as by kubectl.
        source = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        config_file = source
    else:
        path = Path(kubeconfig).expanduser()
        source = str(path)
        config_file = str(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: kubeconfig file not found; pass the file that "
                "`gcloud container clusters get-credentials` (or kind, minikube) "
                "wrote, or None for the default ~/.kube/config"
            )
    where = f" (context {context!r})" if context else ""
    try:
        api = config.new_client_from_config(
            config_file=config_file, context=context, persist_config=False
        )
    except (
        config.ConfigException,
        yaml.YAMLError,
        OSError,
        TypeError,
        KeyError,
        AttributeError,
        ValueError,
    ) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"{source}: not a usable kubeconfig{where}: {detail}"
        ) from exc
    return api, f"{source}{where}"


class Cluster:
    """A connection to one cluster's API server; see ``connect``.

    Close it (or use it as a context manager) to release its connections.
    Every method raises ClusterUnreachable when the server stops answering and
    ClusterError (with the HTTP ``status``) when it refuses a request.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        source: str = "",
        context: str | None = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        if not request_timeout_s > 0:
            raise ConfigError(
                f"request_timeout_s must be positive, got {request_timeout_s!r}"
            )
        self._api = api_client
        self.source = source
        self.context = context
        self.server: str = api_client.configuration.host
        self._timeout = (min(_CONNECT_TIMEOUT_S, request_timeout_s), request_timeout_s)
        self._dyn: Any = None
        self._finalizer: weakref.finalize | None = None

    def __repr__(self) -> str:
        return f"Cluster(server={self.server!r}, source={self.source!r})"

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections and the discovery cache."""
        self._api.close()
        self._dyn = None
        if self._finalizer is not None:
            self._finalizer()

    # -- transport ---------------------------------------------------------------

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Turn the client's exceptions into mlkit errors that say ``what``
        was being done and which server answered."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            raise self._api_error(exc, what) from exc
        except HTTPError as exc:
            detail = getattr(exc, "reason", None) or exc
            raise ClusterUnreachable(self.server, what, detail) from exc
        except json.JSONDecodeError as exc:
            # A proxy or load balancer in front of the server can answer HTML.
            raise ClusterError(
                f"{what}: the answer from {self.server} is not JSON ({exc}); "
                "check that the kubeconfig's server address is the API server"
            ) from exc

    def _api_error(self, exc: Any, what: str) -> ClusterError:
        status = exc.status or None
        if status is None:
            # The client reports TLS failures as a status-0 ApiException.
            return ClusterUnreachable(
                self.server, what, " ".join(str(exc.reason).split())
            )
        message = str(exc.reason or "")
        # The body is a Status object whose message names the cause.
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            message = json.loads(exc.body).get("message") or message
        text = f"{what}: the API server {self.server} answered {status}: {message}"
        if status == 401:
            text += (
                f"; the credentials from {self.source or 'the kubeconfig'} were "
                "rejected: refresh them (for GKE: gcloud container clusters "
                "get-credentials)"
            )
        elif status == 403:
            text += "; the user lacks RBAC permission for this request"
        return ClusterError(text, status=status)

    def _dynamic(self) -> Any:
        """The DynamicClient, created on first use; it looks up which API
        group serves each kind, caching the answers in a private folder."""
        if self._dyn is None:
            from kubernetes import dynamic

            cache_dir = tempfile.mkdtemp(prefix="mlkit-kube-discovery-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, cache_dir, True)
            cache_file = os.path.join(cache_dir, "discovery.json")
            with self._calling("discover the API groups"):
                self._dyn = dynamic.DynamicClient(self._api, cache_file=cache_file)
        return self._dyn

    def _get(self, path: str, what: str, **params: Any) -> dict[str, Any]:
        with self._calling(what):
            response = self._dynamic().request(
                "get", path, serialize=False, _request_timeout=self._timeout, **params
            )
            return json.loads(response.data)

    # -- operations --------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """The server's version (``/version``), after looking up its API groups:
        two cheap requests that prove the server answers and accepts the
        credentials (``/version`` alone is open to anonymous users, the list
        of API groups is not)."""
        from kubernetes import client

        with self._calling("read the server version"):
            response = client.VersionApi(self._api).get_code(
                _preload_content=False, _request_timeout=self._timeout
            )
            version = json.loads(response.data)
        self._dynamic()
        return version

    def apply(
        self,
        objects: Sequence[Mapping[str, Any]],
        field_manager: str = FIELD_MANAGER,
        *,
        force: bool = True,
        dry_run: bool = False,
    ) -> list[AppliedObject]:
        """Server-side apply each object, in order (a Namespace before what it
        holds), as ``field_manager``.

        ``force`` takes over fields another manager owns instead of failing
        with a conflict (see the module docstring). ``dry_run`` has the server
        validate and default the objects without storing them. Every object is
        checked, and every kind looked up, before the first is applied; an
        error names the object and how many were applied before it.
        """
        plan = []
        for index, obj in enumerate(objects, 1):
            api_version, kind, name, namespace = _identify(obj, index)
            with self._calling(f"look up kind {kind} of object {index}"):
                resource = self._resource(api_version, kind, index)
            if resource.namespaced and not namespace:
                raise ConfigError(
                    f"object {index} ({kind} {name}) has no metadata.namespace; "
                    f"a {kind} is namespaced, so the object must name its namespace"
                )
            plan.append((obj, resource, api_version, kind, name, namespace))

        applied: list[AppliedObject] = []
        for index, (obj, resource, api_version, kind, name, namespace) in enumerate(
            plan, 1
        ):
            namespace = namespace if resource.namespaced else None
            ref = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
            what = (
                f"apply {ref} (object {index} of {len(plan)}, {len(applied)} applied)"
            )
            with self._calling(what):
                response = self._dynamic().server_side_apply(
                    resource,
                    body=dict(obj),
                    name=name,
                    namespace=namespace,
                    field_manager=field_manager,
                    force_conflicts=force,
                    dry_run="All" if dry_run else None,
                    serialize=False,
                    _request_timeout=self._timeout,
                )
                live = json.loads(response.data)
            meta = live.get("metadata") or {}
            result = AppliedObject(
                api_version=api_version,
                kind=kind,
                name=name,
                namespace=namespace,
                created=response.status == 201,
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
                generation=meta.get("generation"),
                live=live,
            )
            log.debug("%s %s", "created" if result.created else "applied", ref)
            applied.append(result)

        created = sum(result.created for result in applied)
        log.info(
            "%s %d objects to %s as %r (%d created)",
            "dry-run applied" if dry_run else "applied",
            len(applied),
            self.server,
            field_manager,
            created,
        )
        return applied

    def _resource(self, api_version: str, kind: str, index: int) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dynamic().resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as exc:
            raise ClusterError(
                f"object {index}: the cluster at {self.server} does not serve kind "
                f"{kind} in {api_version}; check the apiVersion (or install the "
                "API that provides it)"
            ) from exc

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """The live Deployment object."""
        return self._get(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            f"read deployment {namespace}/{name}",
        )

    def pods(self, namespace: str, selector: str | None = None) -> list[dict]:
        """The live pods of ``namespace`` matching the label ``selector``."""
        body = self._get(
            f"/api/v1/namespaces/{namespace}/pods",
            f"list pods in {namespace}",
            label_selector=selector or None,
        )
        return list(body.get("items") or [])

    def wait_for_rollout(
        self,
        namespace: str,
        deployment: str,
        timeout_s: float = 300.0,
        *,
        interval_s: float = 2.0,
    ) -> RolloutStatus:
        """Poll the Deployment until its rollout is complete and return its
        final status.

        Complete means the controller has seen the latest spec, and every
        desired replica runs the new template and is available, with no old
        replica left. Raises RolloutFailed, describing the pods that are not
        ready (ImagePullBackOff, CrashLoopBackOff, restarts, events), when
        ``timeout_s`` passes first or the controller reports
        ProgressDeadlineExceeded. A failed poll (server error, lost
        connection) is retried until the timeout.
        """
        # Limitation: a pod that can never start (a missing image) is only
        # reported when timeout_s or the Deployment's progressDeadlineSeconds
        # runs out, because Kubernetes itself treats ImagePullBackOff as
        # possibly transient; choose timeout_s with the model's warm-up in mind.
        start = _monotonic()
        deadline = start + timeout_s
        polls = 0
        last_message = ""
        status: RolloutStatus | None = None
        live: dict[str, Any] = {}
        while True:
            try:
                live = self.deployment(namespace, deployment)
            except ClusterError as exc:
                if not _transient(exc) or (status is None and _monotonic() >= deadline):
                    raise
                log.warning(
                    "polling deployment %s/%s failed: %s", namespace, deployment, exc
                )
            else:
                polls += 1
                status = _rollout_status(live, _monotonic() - start, polls)
                if status.complete:
                    log.info(
                        "deployment %s/%s rolled out in %.1f s: %s",
                        namespace,
                        deployment,
                        status.elapsed_s,
                        status.message,
                    )
                    return status
                if status.failed:
                    raise self._rollout_failed(status, live, "failed")
                if status.message != last_message:
                    log.info(
                        "deployment %s/%s: %s", namespace, deployment, status.message
                    )
                    last_message = status.message
            now = _monotonic()
            if now >= deadline and status is not None:
                raise self._rollout_failed(
                    status, live, f"did not finish within {timeout_s:g} s"
                )
            _sleep(max(0.0, min(interval_s, deadline - now)))

    def _rollout_failed(
        self, status: RolloutStatus, live: Mapping[str, Any], outcome: str
    ) -> RolloutFailed:
        ref = f"{status.namespace}/{status.name}"
        lines = [
            f"deployment {ref} rollout {outcome}: {status.message} "
            f"(after {status.elapsed_s:.1f} s, {status.polls} polls)"
        ]
        for condition in (live.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True" and condition.get("message"):
                lines.append(
                    f"  condition {condition.get('type')} "
                    f"{condition.get('reason', '')}: {condition['message']}"
                )

        reports: list[PodReport] = []
        try:
            selector = _label_selector((live.get("spec") or {}).get("selector"))
            pods = self.pods(status.namespace, selector)
        except ClusterError as exc:
            lines.append(f"  (could not list the pods: {exc})")
            pods = []
        not_ready = [pod for pod in pods if not _pod_ready(pod)]
        for pod in not_ready[:_REPORT_PODS]:
            reports.append(_pod_report(pod, self._events(status.namespace, pod)))
        if pods and not not_ready:
            lines.append(f"  all {len(pods)} pods are ready")
        elif not pods:
            lines.append("  no pod exists for the deployment's selector")
        else:
            lines.append(f"  {len(not_ready)} of {len(pods)} pods are not ready:")
        lines += [report.describe() for report in reports]
        if len(not_ready) > len(reports):
            lines.append(f"  ... and {len(not_ready) - len(reports)} more")
        seen = {reason for report in reports for reason in report.reasons}
        lines += [f"  hint ({reason}): {_HINTS[reason]}" for reason in sorted(seen)]
        return RolloutFailed("\n".join(lines), status, reports)

    def _events(self, namespace: str, pod: Mapping[str, Any]) -> list[str]:
        """The pod's latest events, oldest first; none when they cannot be read
        (the report is useful without them)."""
        name = pod["metadata"]["name"]
        try:
            body = self._get(
                f"/api/v1/namespaces/{namespace}/events",
                f"list events of pod {namespace}/{name}",
                field_selector=f"involvedObject.name={name}",
            )
        except ClusterError as exc:
            log.debug("no events for pod %s: %s", name, exc)
            return []
        events = sorted(
            body.get("items") or [],
            key=lambda e: str(
                e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
            ),
        )
        return [
            f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}".strip()
            for e in events[-_REPORT_EVENTS:]
        ]

    def hpa_status(self, namespace: str, name: str) -> dict[str, Any]:
        """The HorizontalPodAutoscaler's state (autoscaling/v2) as a flat dict.

        Keys: ``namespace``, ``name``, ``min_replicas``, ``max_replicas``,
        ``current_replicas``, ``desired_replicas``, ``current_cpu_utilization``
        and ``target_cpu_utilization`` (percent of the pods' cpu request; None
        before metrics arrive or without a cpu target), ``last_scale_time`` and
        ``conditions`` (a list of dicts with type, status, reason, message).
        """
        hpa = self._get(
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}",
            f"read autoscaler {namespace}/{name}",
        )
        spec = hpa.get("spec") or {}
        status = hpa.get("status") or {}
        return {
            "namespace": namespace,
            "name": name,
            "min_replicas": spec.get("minReplicas", 1),
            "max_replicas": spec.get("maxReplicas"),
            "current_replicas": status.get("currentReplicas"),
            "desired_replicas": status.get("desiredReplicas"),
            "current_cpu_utilization": _cpu_metric(
                status.get("currentMetrics"), "current"
            ),
            "target_cpu_utilization": _cpu_metric(spec.get("metrics"), "target"),
            "last_scale_time": status.get("lastScaleTime"),
            "conditions": [
                {
                    "type": c.get("type"),
                    "status": c.get("status"),
                    "reason": c.get("reason"),
                    "message": c.get("message"),
                }
                for c in status.get("conditions") or []
            ],
        }

    def sample(
        self,
        namespace: str,
        deployment: str,
        hpa: str | None = None,
        duration_s: float = 60.0,
        interval_s: float = 5.0,
    ) -> pd.DataFrame:
        """Poll the Deployment (and its autoscaler ``hpa``) every ``interval_s``
        for ``duration_s`` seconds; one row per poll, columns SAMPLE_COLUMNS.

        ``time_s`` counts from the first poll. ``desired_replicas`` is the
        autoscaler's wish (the Deployment's spec without ``hpa``);
        ``cpu_utilization`` is the autoscaler's current average, in percent of
        the cpu request (NaN without ``hpa`` or before it has metrics);
        ``cpu_millicores`` the pods' total cpu use from metrics.k8s.io (NaN
        when the cluster has no metrics API). ``pods_<phase>`` count the pods
        of the Deployment; ``pods_terminating`` those being deleted.

        Interrupting (the notebook's stop button, Ctrl-C) ends the sampling
        early and returns the rows so far. A poll that fails transiently is
        skipped with a warning. Sampling ends about ``duration_s`` after it
        began, or one poll later (four requests, each bounded by the
        connection's request timeout) when the server is slow.
        """
        import pandas as pd

        if not (duration_s >= 0 and interval_s > 0):
            raise ConfigError(
                "sample needs duration_s >= 0 and interval_s > 0, got "
                f"duration_s={duration_s!r}, interval_s={interval_s!r}"
            )
        live = self.deployment(namespace, deployment)
        selector = _label_selector((live.get("spec") or {}).get("selector"))
        if hpa is not None:
            self.hpa_status(namespace, hpa)

        rows: list[dict[str, Any]] = []
        metrics_ok = True
        start = _monotonic()
        slot = 0
        try:
            while True:
                elapsed = _monotonic() - start
                try:
                    row, metrics_now = self._sample_row(
                        namespace, deployment, hpa, selector
                    )
                except ClusterError as exc:
                    if not _transient(exc):
                        raise
                    log.warning("sample at %.1f s skipped: %s", elapsed, exc)
                else:
                    rows.append({"time_s": elapsed, **row})
                    if metrics_ok and not metrics_now:
                        log.warning(
                            "no pod metrics from metrics.k8s.io at %s; "
                            "cpu_millicores is NaN",
                            self.server,
                        )
                    metrics_ok = metrics_now
                # The next slot on the interval grid; slots that a slow poll
                # overran are skipped rather than sampled in a burst.
                behind = math.floor((_monotonic() - start) / interval_s)
                slot = max(slot + 1, behind + 1)
                if slot * interval_s > duration_s:
                    break
                _sleep(max(0.0, start + slot * interval_s - _monotonic()))
        except KeyboardInterrupt:
            log.warning("sampling interrupted after %d rows", len(rows))

        log.info(
            "sampled deployment %s/%s: %d rows over %.1f s",
            namespace,
            deployment,
            len(rows),
            rows[-1]["time_s"] if rows else 0.0,
        )
        return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))

    def _sample_row(
        self, namespace: str, deployment: str, hpa: str | None, selector: str | None
    ) -> tuple[dict[str, Any], bool]:
        """One poll's values, and whether pod metrics were available."""
        live = self.deployment(namespace, deployment)
        status = live.get("status") or {}
        desired = (live.get("spec") or {}).get("replicas", 1)
        utilization = math.nan
        if hpa is not None:
            hpa_state = self.hpa_status(namespace, hpa)
            if hpa_state["desired_replicas"] is not None:
                desired = hpa_state["desired_replicas"]
            if hpa_state["current_cpu_utilization"] is not None:
                utilization = float(hpa_state["current_cpu_utilization"])

        pods = self.pods(namespace, selector)
        phases = dict.fromkeys(_PHASES, 0)
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            phases[phase if phase in phases else "Unknown"] += 1
        terminating = sum(1 for pod in pods if pod["metadata"].get("deletionTimestamp"))

        cpu = self._pods_cpu_millicores(namespace, selector)
        row = {
            "replicas": status.get("replicas", 0),
            "ready_replicas": status.get("readyReplicas", 0),
            "available_replicas": status.get("availableReplicas", 0),
            "desired_replicas": desired,
            "cpu_utilization": utilization,
            "cpu_millicores": cpu,
            **{f"pods_{phase.lower()}": count for phase, count in phases.items()},
            "pods_terminating": terminating,
        }
        return row, not math.isnan(cpu)

    def _pods_cpu_millicores(self, namespace: str, selector: str | None) -> float:
        """Total cpu use of the selected pods from metrics.k8s.io, NaN when
        the metrics API is missing or fails (it is optional)."""
        try:
            body = self._get(
                f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods",
                f"read pod metrics in {namespace}",
                label_selector=selector or None,
            )
        except ClusterError as exc:
            log.debug("no pod metrics: %s", exc)
            return math.nan
        total = 0.0
        for item in body.get("items") or []:
            for container in item.get("containers") or []:
                total += _cpu_millicores((container.get("usage") or {}).get("cpu"))
        return total

    def service_url(
        self,
        namespace: str,
        name: str,
        *,
        port: int | str | None = None,
        wait_s: float = 0.0,
        interval_s: float = 2.0,
    ) -> str:
        """``http://host[:port]`` of a Service, for smoke tests.

        A LoadBalancer Service gives its external IP or hostname, waiting up to
        ``wait_s`` for the cloud to assign one; other Services give their
        cluster IP, reachable only from inside the cluster. ``port`` picks a
        service port by number or name (default: the one named ``http``, else
        the first). Raises ClusterError when the LoadBalancer has no address
        after ``wait_s``, or the Service is headless.
        """
        deadline = _monotonic() + wait_s
        while True:
            service = self._get(
                f"/api/v1/namespaces/{namespace}/services/{name}",
                f"read service {namespace}/{name}",
            )
            spec = service.get("spec") or {}
            number = _service_port(spec.get("ports") or [], port, f"{namespace}/{name}")
            if spec.get("type") != "LoadBalancer":
                host = spec.get("clusterIP")
                if not host or host == "None":
                    raise ClusterError(
                        f"service {namespace}/{name} is headless (no cluster IP); "
                        "address its pods instead"
                    )
                log.info(
                    "service %s/%s is of type %s: its address %s is reachable only "
                    "inside the cluster",
                    namespace,
                    name,
                    spec.get("type", "ClusterIP"),
                    host,
                )
                return _url(host, number)
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get(
                "ingress"
            ) or []
            for entry in ingress:
                host = entry.get("ip") or entry.get("hostname")
                if host:
                    return _url(host, number)
            now = _monotonic()
            if now >= deadline:
                raise ClusterError(
                    f"service {namespace}/{name} has no external address yet (the "
                    f"load balancer is still being created); wait longer (wait_s="
                    f"{wait_s:g} now) or see `kubectl describe service -n "
                    f"{namespace} {name}`"
                )
            _sleep(max(0.0, min(interval_s, deadline - now)))


# -- helpers -------------------------------------------------------------------


def _identify(obj: Any, index: int) -> tuple[str, str, str, str | None]:
    """apiVersion, kind, name and namespace of an object to apply."""
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"object {index}: expected a Kubernetes object (a mapping), "
            f"got {type(obj).__name__}"
        )
    meta = obj.get("metadata")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    missing = [
        key
        for key, value in (
            ("apiVersion", api_version),
            ("kind", kind),
            ("metadata.name", name),
        )
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise ConfigError(
            f"object {index} ({kind or 'unknown kind'}): missing " + ", ".join(missing)
        )
    namespace = meta.get("namespace") or None
    return api_version, kind, name, namespace


def _transient(exc: ClusterError) -> bool:
    """Whether a failed request may succeed when repeated."""
    return (
        isinstance(exc, ClusterUnreachable)
        or exc.status is None
        or exc.status == 429
        or exc.status >= 500
    )


def _condition(live: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in (live.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return {}


def _rollout_status(
    live: Mapping[str, Any], elapsed_s: float, polls: int
) -> RolloutStatus:
    """Where a Deployment's rollout stands, judged as ``kubectl rollout
    status`` does."""
    meta = live.get("metadata") or {}
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    desired = int(spec.get("replicas", 1))
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)

    complete = failed = False
    progressing = _condition(live, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        failed = True
        message = "the controller reports ProgressDeadlineExceeded"
    elif observed < generation:
        message = f"waiting for the controller to see generation {generation}"
    elif updated < desired:
        message = f"{updated} of {desired} replicas updated"
    elif total > updated:
        message = f"{total - updated} old replicas still terminating"
    elif available < updated:
        message = f"{available} of {updated} updated replicas available"
    else:
        complete = True
        message = f"{available} of {desired} replicas available"
    return RolloutStatus(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        generation=generation,
        observed_generation=observed,
        replicas=desired,
        updated_replicas=updated,
        ready_replicas=ready,
        available_replicas=available,
        complete=complete,
        failed=failed,
        message=message,
        elapsed_s=elapsed_s,
        polls=polls,
    )


def _label_selector(selector: Mapping[str, Any] | None) -> str | None:
    """A LabelSelector object as the query string the API accepts."""
    if not selector:
        return None
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ClusterError(f"unknown label selector operator {operator!r}")
    return ",".join(terms) or None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return _condition(pod, "Ready").get("status") == "True"


def _pod_report(pod: Mapping[str, Any], events: Sequence[str]) -> PodReport:
    """What is wrong with one pod, from its status."""
    status = pod.get("status") or {}
    problems: list[str] = []
    reasons: list[str] = []
    restarts = 0
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    for container in containers:
        restarts += int(container.get("restartCount") or 0)
        label = f"container {container.get('name', '?')}"
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated")
        if "waiting" in state:
            waiting = state["waiting"] or {}
            reason = waiting.get("reason", "waiting")
            reasons.append(reason)
            detail = f" ({waiting['message']})" if waiting.get("message") else ""
            problems.append(f"{label} waiting: {reason}{detail}")
        if "terminated" in state:
            problems.append(_terminated(label, "terminated", state["terminated"]))
            reasons.append(state["terminated"].get("reason", ""))
        if last:
            problems.append(_terminated(label, "last terminated", last))
            reasons.append(last.get("reason", ""))
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("reason"):
            reasons.append(condition["reason"])
            detail = f" ({condition['message']})" if condition.get("message") else ""
            problems.append(
                f"condition {condition.get('type')}: {condition['reason']}{detail}"
            )
    return PodReport(
        name=(pod.get("metadata") or {}).get("name", "?"),
        phase=status.get("phase", "Unknown"),
        ready=_pod_ready(pod),
        restarts=restarts,
        problems=tuple(problems),
        events=tuple(events),
        reasons=tuple(sorted({r for r in reasons if r in _HINTS})),
    )


def _terminated(label: str, when: str, terminated: Mapping[str, Any]) -> str:
    reason = terminated.get("reason", "unknown reason")
    return f"{label} {when}: {reason} (exit code {terminated.get('exitCode', '?')})"


def _cpu_metric(metrics: Any, which: str) -> int | None:
    """The cpu averageUtilization of an autoscaling/v2 metric list (spec
    targets or status current values), or None."""
    for metric in metrics or []:
        resource = metric.get("resource") or {}
        if metric.get("type") == "Resource" and resource.get("name") == "cpu":
            value = (resource.get(which) or {}).get("averageUtilization")
            if value is not None:
                return int(value)
    return None


def _cpu_millicores(quantity: Any) -> float:
    """A Kubernetes cpu quantity ("250m", "1", "12345678n") in millicores."""
    text = str(quantity or "").strip()
    scale = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    try:
        if text and text[-1] in scale:
            return float(text[:-1]) * scale[text[-1]]
        return float(text) * 1000.0
    except ValueError:
        return math.nan


def _service_port(
    ports: Sequence[Mapping[str, Any]], port: int | str | None, ref: str
) -> int:
    if not ports:
        raise ClusterError(f"service {ref} exposes no port")
    if port is None:
        named = [p for p in ports if p.get("name") == "http"]
        return int((named or ports)[0]["port"])
    for entry in ports:
        if port in (entry.get("name"), entry.get("port")):
            return int(entry["port"])
    shown = ", ".join(str(p.get("name") or p.get("port")) for p in ports)
    raise ClusterError(f"service {ref} has no port {port!r} (it has {shown})")


def _url(host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"
