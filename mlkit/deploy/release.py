"""One release of the service: the gated model, its image, its objects.

The deploy notebook and the deploy workflow go through ``prepare_release``,
which refuses a model without a passing gate file before anything else
happens. ``smoke_test`` sends real images to a running service (a local server
or the cluster's Service) and tabulates the answers.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlkit._io import sha256_file, write_json
from mlkit.deploy.config import DeployConfig, load_deploy_config
from mlkit.deploy.gate import check_gated_model, git_head, image_reference
from mlkit.deploy.objects import build_objects, serve_environment, write_objects
from mlkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# The tag's code part when the checkout's commit is unknown (not a git checkout).
_NO_COMMIT = "0000000"
# Settings the local server takes from the command line, not from the pod's env.
_LOCAL_OWN = ("MODEL_DIR", "HOST", "PORT", "MODEL_WORKERS", "TORCH_THREADS")


@dataclass
class Release:
    """What gets deployed: the model, the gate that passed it, the objects."""

    model_dir: Path
    model_sha256: str
    gate: dict[str, Any]
    image: str
    config: DeployConfig
    objects: list[dict[str, Any]] = field(repr=False)

    def local_settings(self) -> dict[str, str]:
        """The pod's server settings, for ``LocalServer(settings=...)``.

        Host, port, model directory and threads are the local machine's.
        """
        prefix = "MLKIT_SERVE_"
        return {
            key[len(prefix) :].lower(): value
            for key, value in serve_environment(self.config).items()
            if key[len(prefix) :] not in _LOCAL_OWN
        }


def prepare_release(
    model_dir: str | Path,
    gate_file: str | Path,
    *,
    image_repository: str,
    deploy_config: str | Path = "dev",
    git_sha: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Release:
    """Check the gate, then build the deploy config and the objects.

    Raises DataError (from ``check_gated_model``) when the gate file is
    missing, failed, or names another model: before any object is built.
    ``git_sha`` defaults to the checkout's HEAD.
    """
    from mlkit.evaluate.gate import read_gate

    model_dir = Path(model_dir)
    model_sha = check_gated_model(model_dir, gate_file)
    gate = read_gate(Path(gate_file))
    commit = git_sha or git_head() or _NO_COMMIT
    image = image_reference(image_repository, commit, model_sha)
    for reserved in ("image", "model_sha256"):
        if reserved in (overrides or {}):
            raise ConfigError(f"{reserved} comes from the gated model, not overrides")
    config = load_deploy_config(
        deploy_config,
        **{**(overrides or {}), "image": image, "model_sha256": model_sha},
    )
    objects = build_objects(config)
    log.info(
        "release %s: %d objects for %s/%s",
        image,
        len(objects),
        config.namespace,
        config.name,
    )
    return Release(model_dir, model_sha, dict(gate), image, config, objects)


def objects_table(objects: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """kind, name and the settings that matter for each object, one row each."""
    rows = []
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        facts = ""
        if kind == "Deployment":
            pod = spec["template"]["spec"]
            container = pod["containers"][0]
            probes = [p for p in ("startupProbe", "readinessProbe", "livenessProbe")]
            facts = (
                f"image {container['image']}; "
                f"requests {container['resources']['requests']}; "
                f"limits {container['resources']['limits']}; "
                f"probes {', '.join(p for p in probes if p in container)}; "
                f"grace {pod['terminationGracePeriodSeconds']} s"
            )
        elif kind == "HorizontalPodAutoscaler":
            target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
            facts = (
                f"{spec['minReplicas']}-{spec['maxReplicas']} replicas, CPU target "
                f"{target}% of requests, scales {spec['scaleTargetRef']['name']}"
            )
        elif kind == "Service":
            ports = ", ".join(f"{p['port']}->{p['targetPort']}" for p in spec["ports"])
            facts = f"{spec.get('type', 'ClusterIP')}, ports {ports}"
        elif kind == "PodDisruptionBudget":
            facts = f"minAvailable {spec.get('minAvailable')}"
        elif kind == "NetworkPolicy":
            facts = f"policy types {', '.join(spec.get('policyTypes', []))}"
        elif kind == "ConfigMap":
            facts = f"{len(obj.get('data', {}))} server settings"
        rows.append(
            {
                "kind": kind,
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace", ""),
                "settings": facts,
            }
        )
    return pd.DataFrame(rows)


def smoke_test(
    base_url: str,
    images: Sequence[str | Path],
    texts: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    *,
    timeout_s: float = 30.0,
) -> pd.DataFrame:
    """POST each image (with its text) to ``/v1/predict``; one row per answer.

    Columns: image, label (when given), status, prediction, top_class,
    confidence, latency_ms, error. A failed request is a row with its status
    and error body, never an exception, so one table shows everything.
    """
    import httpx

    if texts is not None and len(texts) != len(images):
        raise DataError("one text per image is needed", got=f"{len(texts)} texts")
    rows = []
    with httpx.Client(base_url=base_url, timeout=timeout_s, trust_env=False) as client:
        for i, path in enumerate(images):
            path = Path(path)
            data = {"text": texts[i]} if texts is not None else None
            started = time.perf_counter()
            try:
                response = client.post(
                    "/v1/predict",
                    files={"image": (path.name, path.read_bytes(), _media_type(path))},
                    data=data,
                )
            except httpx.HTTPError as exc:
                status, body = None, {"error": type(exc).__name__}
            else:
                status, body = response.status_code, response.json()
            row = {
                "image": path.name,
                "status": status,
                "prediction": body.get("prediction"),
                "top_class": body.get("top_class"),
                "confidence": body.get("confidence"),
                "latency_ms": round(1000 * (time.perf_counter() - started), 1),
                "error": body.get("error"),
            }
            if labels is not None:
                row = {"image": row.pop("image"), "label": labels[i], **row}
            rows.append(row)
    return pd.DataFrame(rows)


def _media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def write_release(
    release: Release,
    out_dir: str | Path,
    *,
    validation: Sequence[Mapping[str, Any]] = (),
    smoke: pd.DataFrame | None = None,
    mode: str = "local",
) -> Path:
    """The objects as YAML files and ``deploy_report.json`` in ``out_dir``.

    The report names the model, gate, image and every file with its sha256,
    the schema checks and the smoke test; returns its path.
    """
    out_dir = Path(out_dir)
    files = write_objects(release.objects, out_dir / "k8s")
    report = {
        "mode": mode,
        "model_sha256": release.model_sha256,
        "image": release.image,
        "namespace": release.config.namespace,
        "gate": {
            key: release.gate.get(key)
            for key in ("metric", "measured", "threshold", "synthetic", "created_at")
        },
        "objects": [
            {
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "file": str(path),
                "sha256": sha256_file(path),
            }
            for obj, path in zip(release.objects, files, strict=True)
        ],
        "schema_checks": {
            "total": len(validation),
            "failed": sum(1 for row in validation if not row["ok"]),
            "versions": sorted({row["version"] for row in validation}),
        },
    }
    if smoke is not None:
        report["smoke_test"] = {
            "requests": len(smoke),
            "ok": int((smoke["status"] == 200).sum()),
            "p50_latency_ms": float(smoke["latency_ms"].median())
            if len(smoke)
            else None,
        }
    return write_json(out_dir / "deploy_report.json", report)


def sample_requests(
    manifest: str | Path, n: int, *, split: str = "test", seed: int = 0
) -> pd.DataFrame:
    """``n`` rows of ``split`` as (path, text, label), for smoke and load tests.

    Images are read from the data root the dataset card records. Raises
    DataError when the split has no rows or the card names no data root.
    """
    from mlkit.data.manifest import CARD_NAME, manifest_file, read_card, read_manifest

    path = manifest_file(manifest)
    rows = read_manifest(path)
    rows = rows[rows["split"] == split]
    if rows.empty:
        raise DataError(
            f"the manifest has no {split!r} rows", path=path, column="split"
        )
    root = read_card(path.with_name(CARD_NAME)).get("parameters", {}).get("data_root")
    if not root:
        raise DataError("the dataset card names no data root", path=path)
    picked = rows.sample(n=min(n, len(rows)), random_state=seed)
    return pd.DataFrame(
        {
            "path": [str(Path(root) / p) for p in picked["image_path"]],
            "text": picked["text"].fillna("").tolist(),
            "label": picked["label"].tolist(),
        }
    )
