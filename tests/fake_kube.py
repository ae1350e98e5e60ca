"""A fake Kubernetes API server for tests: this is a fake API server, not a cluster.

``FakeKube`` is a small threaded HTTP server on 127.0.0.1 that keeps objects in
memory and answers the requests that ``mlkit.deploy.cluster`` (through the
official ``kubernetes`` client and its DynamicClient) sends: ``/version``, API
discovery, server-side apply, GET of single objects, lists with equality label
selectors, events by involved object, and pod metrics from ``metrics.k8s.io``.

No controller runs: nothing creates pods, updates a Deployment's status or
scales anything by itself. A test sets the state it needs with
``set_status``, ``add_pod``, ``add_event`` and ``set_pod_cpu``, or lets
``complete_rollout_after`` / ``stall_rollout`` play a rollout. Every request is
recorded in ``requests`` so that a test can check what the client sent.

Limitation: server-side apply here replaces the object's fields with the applied
ones (keeping status, uid, creationTimestamp and an omitted ``spec.replicas``);
there is no field ownership, conflict detection, defaulting or validation
beyond the checks in ``_apply``.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

# (group, version, plural, kind, namespaced): the resources this fake serves.
RESOURCES = [
    ("", "v1", "namespaces", "Namespace", False),
    ("", "v1", "pods", "Pod", True),
    ("", "v1", "services", "Service", True),
    ("", "v1", "serviceaccounts", "ServiceAccount", True),
    ("", "v1", "configmaps", "ConfigMap", True),
    ("", "v1", "events", "Event", True),
    ("apps", "v1", "deployments", "Deployment", True),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
]
METRICS_GROUP = ("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True)

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Request:
    """One request as the fake server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class _Error(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors only (``a=b,c==d,e!=f``, ``key``)."""
    if not selector:
        return True
    for term in selector.split(","):
        term = term.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    """An in-memory fake Kubernetes API server (not a cluster) on a free port.

    Use as a context manager, or call ``start()`` and ``stop()``. ``url`` is the
    plain-HTTP server address to put in a kubeconfig; any bearer token is
    accepted. ``metrics=False`` serves no ``metrics.k8s.io`` group, like a
    cluster without metrics-server.
    """

    def __init__(self, *, metrics: bool = True) -> None:
        self.metrics = metrics
        self.requests: list[Request] = []
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._pod_cpu: dict[tuple[str, str], str] = {}
        self._failures: list[tuple[str, str, int]] = []
        self._get_hooks: dict[tuple[str, str, str, str], list[Any]] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeKube:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval makes stop() quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-kube",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, context: str = "fake") -> dict[str, Any]:
        """A kubeconfig (as a mapping) whose current context is this server."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "dummy-token"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "fake", "user": "fake"},
                }
            ],
            "current-context": context,
        }

    # -- state for tests -------------------------------------------------------

    def get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        """A copy of the stored object, or None."""
        group = _group_of(plural)
        with self._lock:
            obj = self._objects.get((group, plural, namespace or "", name))
            return copy.deepcopy(obj)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as is (as if some controller had created it)."""
        plural = _plural_of(obj["kind"])
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("resourceVersion", "1")
        key = (_group_of(plural), plural, meta.get("namespace", ""), meta["name"])
        with self._lock:
            self._objects[key] = obj
        return obj

    def set_status(
        self, plural: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        """Replace the status of a stored object (as its controller would)."""
        group = _group_of(plural)
        with self._lock:
            obj = self._objects[(group, plural, namespace or "", name)]
            obj["status"] = copy.deepcopy(status)
            self._bump(obj)

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        *,
        phase: str = "Running",
        ready: bool = True,
        waiting: tuple[str, str] | None = None,
        terminated: tuple[str, int] | None = None,
        restarts: int = 0,
        terminating: bool = False,
        cpu: str | None = None,
    ) -> dict[str, Any]:
        """A pod with one container ``server``; ``waiting`` is (reason, message),
        ``terminated`` is (reason, exit code) of its last termination, ``cpu`` its
        usage in metrics.k8s.io (for example ``"250m"``)."""
        state: dict[str, Any] = {"running": {"startedAt": _now()}}
        if waiting is not None:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        container: dict[str, Any] = {
            "name": "server",
            "image": "example.com/mlkit:fake",
            "ready": ready,
            "restartCount": restarts,
            "state": state,
        }
        if terminated is not None:
            container["lastState"] = {
                "terminated": {"reason": terminated[0], "exitCode": terminated[1]}
            }
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
        if terminating:
            meta["deletionTimestamp"] = _now()
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": [{"name": "server"}]},
            "status": {
                "phase": phase,
                "conditions": [
                    {"type": "Ready", "status": "True" if ready else "False"}
                ],
                "containerStatuses": [container],
            },
        }
        if cpu is not None:
            self.set_pod_cpu(namespace, name, cpu)
        return self.put(pod)

    def remove_pods(self, namespace: str) -> None:
        with self._lock:
            for key in [
                k for k in self._objects if k[1] == "pods" and k[2] == namespace
            ]:
                del self._objects[key]

    def set_pod_cpu(self, namespace: str, pod: str, cpu: str) -> None:
        with self._lock:
            self._pod_cpu[(namespace, pod)] = cpu

    def add_event(
        self,
        namespace: str,
        involved: str,
        reason: str,
        message: str,
        *,
        type_: str = "Warning",
        kind: str = "Pod",
    ) -> None:
        name = f"{involved}.{uuid.uuid4().hex[:8]}"
        self.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"kind": kind, "name": involved},
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "lastTimestamp": _now(),
            }
        )

    def fail_next(self, method: str, path_contains: str, status: int = 500) -> None:
        """Answer the next ``method`` request whose path contains
        ``path_contains`` with an error ``status``."""
        with self._lock:
            self._failures.append((method.upper(), path_contains, status))

    def on_get(
        self, plural: str, namespace: str, name: str, hook: Any, *, after: int = 1
    ) -> None:
        """Call ``hook(fake)`` just before answering the ``after``-th GET of
        that object (counting from now)."""
        key = (_group_of(plural), plural, namespace, name)
        with self._lock:
            self._get_hooks.setdefault(key, []).append([after, hook])

    def complete_rollout_after(self, namespace: str, name: str, polls: int) -> None:
        """Play a rollout of a stored Deployment: in progress now (no replica
        available), complete with that many Running, Ready pods on the
        ``polls``-th GET of the Deployment from now."""
        deployment = self.get("deployments", namespace, name)
        assert deployment is not None, f"apply deployment {namespace}/{name} first"
        replicas = deployment["spec"].get("replicas", 1)
        generation = deployment["metadata"]["generation"]
        labels = deployment["spec"]["selector"]["matchLabels"]
        self.set_status(
            "deployments",
            namespace,
            name,
            {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "unavailableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "False"},
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "ReplicaSetUpdated",
                    },
                ],
            },
        )

        def complete(fake: FakeKube) -> None:
            for index in range(replicas):
                fake.add_pod(namespace, f"{name}-abc12-{index}", dict(labels))
            fake.set_status(
                "deployments",
                namespace,
                name,
                {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                    "conditions": [
                        {"type": "Available", "status": "True"},
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                        },
                    ],
                },
            )

        self.on_get("deployments", namespace, name, complete, after=polls)

    def stall_rollout(
        self,
        namespace: str,
        name: str,
        reason: str = "ImagePullBackOff",
        *,
        deadline_exceeded: bool = False,
    ) -> None:
        """A rollout whose pods never become ready: every replica waits with
        ``reason``; ``deadline_exceeded`` adds the ProgressDeadlineExceeded
        condition the Deployment controller sets after progressDeadlineSeconds."""
        deployment = self.get("deployments", namespace, name)
        assert deployment is not None, f"apply deployment {namespace}/{name} first"
        replicas = deployment["spec"].get("replicas", 1)
        labels = deployment["spec"]["selector"]["matchLabels"]
        message = 'Back-off pulling image "example.com/mlkit:missing"'
        for index in range(replicas):
            pod = f"{name}-def34-{index}"
            self.add_pod(
                namespace,
                pod,
                dict(labels),
                phase="Pending",
                ready=False,
                waiting=(reason, message),
            )
            self.add_event(namespace, pod, "Failed", f"Error: {reason}")
        progressing = {
            "type": "Progressing",
            "status": "True",
            "reason": "ReplicaSetUpdated",
        }
        if deadline_exceeded:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}-def34" has timed out progressing.',
            }
        self.set_status(
            "deployments",
            namespace,
            name,
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "unavailableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "False"}, progressing],
            },
        )

    # -- request handling ------------------------------------------------------

    def _bump(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(int(meta.get("resourceVersion", "0")) + 1)

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for index, (m, fragment, status) in enumerate(self._failures):
                if m == method and fragment in path:
                    del self._failures[index]
                    return status
        return None

    def _run_get_hooks(self, key: tuple[str, str, str, str]) -> None:
        due = []
        with self._lock:
            for entry in self._get_hooks.get(key, []):
                entry[0] -= 1
                if entry[0] == 0:
                    due.append(entry[1])
            self._get_hooks[key] = [e for e in self._get_hooks.get(key, []) if e[0] > 0]
        for hook in due:
            hook(self)

    def handle(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        failure = self._take_failure(request.method, request.path)
        if failure is not None:
            raise _Error(failure, "InternalError", "injected failure")
        path = request.path.rstrip("/")
        parts = [p for p in path.split("/") if p]

        if path == "/version":
            return 200, VERSION
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            return 200, self._group_list()
        if parts[:2] == ["api", "v1"] and len(parts) == 2:
            return 200, self._resource_list("", "v1")
        if parts[:1] == ["apis"] and len(parts) == 3:
            return 200, self._resource_list(parts[1], parts[2])

        # /api/v1/... or /apis/<group>/<version>/...
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) > 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _Error(404, "NotFound", f"the server could not find {path}")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        if self._resource(group, version, plural) is None:
            raise _Error(404, "NotFound", f"the server could not find {path}")

        if request.method == "PATCH" and name is not None:
            return self._apply(group, version, plural, namespace, name, request)
        if request.method == "GET" and name is not None:
            return 200, self._get(group, plural, namespace, name)
        if request.method == "GET":
            return 200, self._list(group, version, plural, namespace, request.query)
        raise _Error(405, "MethodNotAllowed", f"{request.method} is not supported here")

    def _group_list(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        served = RESOURCES + ([METRICS_GROUP] if self.metrics else [])
        for group, version, *_ in served:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        items = []
        for group, versions in groups.items():
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            items.append(
                {"name": group, "versions": entries, "preferredVersion": entries[0]}
            )
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}

    def _resource(self, group: str, version: str, plural: str) -> tuple | None:
        served = RESOURCES + ([METRICS_GROUP] if self.metrics else [])
        for entry in served:
            if entry[:3] == (group, version, plural):
                return entry
        return None

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        served = RESOURCES + ([METRICS_GROUP] if self.metrics else [])
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "list", "patch"],
            }
            for g, v, plural, kind, namespaced in served
            if (g, v) == (group, version)
        ]
        if not resources:
            raise _Error(404, "NotFound", f"no API group {group}/{version}")
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "groupVersion": group_version,
            "resources": resources,
        }

    def _get(
        self, group: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any]:
        key = (group, plural, namespace, name)
        self._run_get_hooks(key)
        with self._lock:
            obj = self._objects.get(key)
            if obj is None:
                raise _Error(404, "NotFound", f'{plural} "{name}" not found')
            return copy.deepcopy(obj)

    def _list(
        self, group: str, version: str, plural: str, namespace: str, query: dict
    ) -> dict[str, Any]:
        selector = query.get("labelSelector")
        field = query.get("fieldSelector", "")
        if group == "metrics.k8s.io":
            pods = self._list("", "v1", "pods", namespace, query)["items"]
            items = []
            with self._lock:
                for pod in pods:
                    cpu = self._pod_cpu.get((namespace, pod["metadata"]["name"]))
                    if cpu is not None:
                        items.append(
                            {
                                "metadata": {
                                    "name": pod["metadata"]["name"],
                                    "namespace": namespace,
                                },
                                "window": "15s",
                                "containers": [
                                    {
                                        "name": "server",
                                        "usage": {"cpu": cpu, "memory": "500Mi"},
                                    }
                                ],
                            }
                        )
            return {
                "kind": "PodMetricsList",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "items": items,
            }
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (g, p, ns, _), obj in sorted(self._objects.items())
                if (g, p) == (group, plural)
                and (not namespace or ns == namespace)
                and _matches(obj["metadata"].get("labels") or {}, selector)
            ]
        if field.startswith("involvedObject.name="):
            wanted = field.split("=", 1)[1]
            items = [
                i for i in items if i.get("involvedObject", {}).get("name") == wanted
            ]
        kind = self._resource(group, version, plural)[3]
        return {
            "kind": f"{kind}List",
            "apiVersion": f"{group}/{version}" if group else version,
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    def _apply(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        request: Request,
    ) -> tuple[int, dict[str, Any]]:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip() != APPLY_CONTENT_TYPE:
            raise _Error(
                415, "UnsupportedMediaType", f"unsupported patch type {content_type}"
            )
        manager = request.query.get("fieldManager")
        if not manager:
            raise _Error(
                400, "BadRequest", "PATCH is not supported without fieldManager"
            )
        body = request.body
        if not isinstance(body, dict):
            raise _Error(
                400, "BadRequest", "the body of an apply patch must be an object"
            )
        meta = body.get("metadata") or {}
        entry = self._resource(group, version, plural)
        if meta.get("name") != name:
            raise _Error(
                400, "BadRequest", "the name of the object does not match the URL"
            )
        if entry[4] and meta.get("namespace", namespace) != namespace:
            raise _Error(
                400, "BadRequest", "the namespace of the object does not match the URL"
            )
        if body.get("kind") != entry[3]:
            raise _Error(
                400, "BadRequest", f"kind {body.get('kind')!r} does not match {plural}"
            )

        key = (group, plural, namespace, name)
        applied = copy.deepcopy(body)
        with self._lock:
            old = self._objects.get(key)
            created = old is None
            if created:
                if namespace and ("", "namespaces", "", namespace) not in self._objects:
                    raise _Error(404, "NotFound", f'namespaces "{namespace}" not found')
                live_meta = {
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _now(),
                    "resourceVersion": "0",
                    "generation": 1,
                }
                status: dict[str, Any] = {}
            else:
                live_meta = {
                    k: old["metadata"][k]
                    for k in (
                        "uid",
                        "creationTimestamp",
                        "resourceVersion",
                        "generation",
                    )
                }
                status = old.get("status", {})
            spec = applied.get("spec")
            if (
                plural == "deployments"
                and isinstance(spec, dict)
                and "replicas" not in spec
            ):
                # As on a real server: an omitted replicas keeps the current
                # value (the HPA's), and defaults to 1 on creation.
                spec["replicas"] = old["spec"].get("replicas", 1) if old else 1
            live = dict(applied)
            live["metadata"] = {**meta, **live_meta}
            if entry[4]:
                live["metadata"]["namespace"] = namespace
            live["metadata"]["managedFields"] = [
                {
                    "manager": manager,
                    "operation": "Apply",
                    "apiVersion": body.get("apiVersion"),
                    "time": _now(),
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {},
                }
            ]
            if status:
                live["status"] = status

            if created:
                self._bump(live)
            else:
                spec_changed = _content(old) != _content(live)
                if spec_changed:
                    live["metadata"]["generation"] += 1
                if spec_changed or _labels(old) != _labels(live):
                    self._bump(live)
            if request.query.get("dryRun") != "All":
                self._objects[key] = live
            return (201 if created else 200), copy.deepcopy(live)


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What a change of bumps metadata.generation: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _labels(obj: dict[str, Any]) -> tuple[Any, Any]:
    return obj["metadata"].get("labels"), obj["metadata"].get("annotations")


def _plural_of(kind: str) -> str:
    for _, _, plural, k, _ in RESOURCES:
        if k == kind:
            return plural
    raise KeyError(f"the fake server does not serve kind {kind}")


def _group_of(plural: str) -> str:
    for group, _, p, _, _ in RESOURCES:
        if p == plural:
            return group
    raise KeyError(f"the fake server does not serve {plural}")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKube
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed
    # acknowledgements add 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the test output should show assertions, not access logs.
        return

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = yaml.safe_load(raw.decode("utf-8"))
            except yaml.YAMLError:
                body = raw
        request = Request(
            method=self.command,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            code, payload = self.fake.handle(request)
        except _Error as exc:
            code = exc.code
            payload = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": exc.message,
                "reason": exc.reason,
                "code": exc.code,
            }
        data = json.dumps(payload).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_PATCH = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
