"""The evaluation report: every number a reviewer or the deployment gate needs.

The report is a plain JSON-able dict built only from the arrays the caller
passes (targets, probabilities, groups) plus identifiers of what was evaluated
(model and manifest sha256) and whether the data was synthetic. Nothing is
read from disk or the clock here, so the same inputs give the same report.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlkit._io import write_json
from mlkit.errors import ConfigError, DataError
from mlkit.evaluate import metrics
from mlkit.evaluate.metrics import AbstentionThresholds

log = logging.getLogger(__name__)

REPORT_VERSION = 1
REPORT_KEYS = (
    "report_version",
    "synthetic",
    "model_sha256",
    "manifest_sha256",
    "split",
    "labels",
    "metrics",
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _jsonable(value: Any) -> Any:
    """Plain Python values for JSON: numpy scalars unwrapped, NaN as None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame, index_name: str) -> list[dict[str, Any]]:
    """A table as a list of row dicts, its index as the first field."""
    table = frame.reset_index(names=index_name)
    return _jsonable(table.to_dict(orient="records"))


def _sha256(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise DataError(
            f"{name} is not a sha256 hex digest",
            expected="64 lower-case hex characters",
            got=repr(value),
        )
    return value


def _target_indices(y_true: Any, labels: list[str]) -> np.ndarray:
    """Targets as column indices; class names are looked up in ``labels``."""
    true = np.asarray(y_true)
    if true.ndim != 1:
        raise DataError("y_true must be one value per sample", got=f"{true.shape}")
    if true.dtype.kind in "USO":
        codes = pd.Index(labels).get_indexer(true)
        if (codes < 0).any():
            unknown = sorted({str(v) for v in true[codes < 0]})
            raise DataError(
                "y_true has class names that are not in labels",
                got=", ".join(unknown[:10]),
            )
        return codes
    return true


def _scores(true: np.ndarray, probs: np.ndarray, k: int) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    return {
        "n": len(true),
        "macro_f1": metrics.macro_f1(true, pred, range(k)),
        "accuracy": metrics.accuracy(true, pred),
    }


def evaluation_report(
    y_true: Any,
    probs: Any,
    labels: Sequence[str],
    *,
    model_sha256: str,
    manifest_sha256: str,
    synthetic: bool,
    split: str = "test",
    fitzpatrick_group: Any = None,
    dataset: Any = None,
    abstention: AbstentionThresholds | Mapping[str, Any] | None = None,
    ablations: Mapping[str, Any] | None = None,
    n_bins: int = 15,
    coverage_thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Metrics of one evaluated split as a JSON-able dict.

    ``probs`` has one column per entry of ``labels`` (class names, in the
    model's output order); ``y_true`` holds column indices or class names.
    The prediction is the most probable class. ``fitzpatrick_group`` and
    ``dataset`` (one value per sample, missing allowed) add per-group tables;
    ``abstention`` thresholds add abstention counts; ``ablations`` maps a name
    such as "image_only" to that variant's probabilities on the same samples.
    ``synthetic`` is required so that a report on demo data can never be
    mistaken for a real one.

    Raises DataError for inconsistent shapes, unknown class names or
    malformed sha256 values, ConfigError for bad options.
    """
    if not isinstance(synthetic, bool):
        raise ConfigError(f"synthetic must be True or False, got {synthetic!r}")
    model_sha256 = _sha256("model_sha256", model_sha256)
    manifest_sha256 = _sha256("manifest_sha256", manifest_sha256)
    names = [str(label) for label in labels]
    if len(set(names)) != len(names) or not names:
        raise DataError("labels must be non-empty and unique", got=repr(names))
    array = metrics._probabilities(probs)
    if array.shape[1] != len(names):
        raise DataError(
            "probs has a different number of columns than labels",
            expected=f"{len(names)} columns",
            got=str(array.shape[1]),
        )
    true = metrics._class_indices(_target_indices(y_true, names), len(names))
    if len(true) != len(array):
        raise DataError(
            "y_true and probs differ in length",
            expected=f"{len(array)} targets",
            got=str(len(true)),
        )

    # Every table is keyed by class names so that the report reads on its own.
    k = len(names)
    pred = array.argmax(axis=1)
    true_names = np.asarray(names, dtype=object)[true]
    pred_names = np.asarray(names, dtype=object)[pred]
    scores = _scores(true, array, k)
    ece = metrics.expected_calibration_error(array, true, n_bins=n_bins)
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "synthetic": synthetic,
        "model_sha256": model_sha256,
        "manifest_sha256": manifest_sha256,
        "split": split,
        "labels": names,
        "metrics": {**scores, "ece": ece},
        "per_class": _records(
            metrics.per_class(true_names, pred_names, names), "label"
        ),
        "confusion": {
            "labels": names,
            "matrix": metrics.confusion(true_names, pred_names, names).tolist(),
        },
        "calibration": {
            "n_bins": n_bins,
            "ece": ece,
            "reliability": _records(
                metrics.reliability_table(array, true, n_bins=n_bins), "bin"
            ),
        },
        "coverage_accuracy": _records(
            metrics.coverage_accuracy(array, true, coverage_thresholds), "step"
        ),
        "groups": {},
    }

    if fitzpatrick_group is not None:
        table = metrics.group_metrics(
            true_names,
            pred_names,
            fitzpatrick_group,
            names,
            expected=metrics.FITZPATRICK_GROUPS,
        )
        report["groups"]["fitzpatrick_group"] = _records(table, "group")
    if dataset is not None:
        table = metrics.group_metrics(true_names, pred_names, dataset, names)
        report["groups"]["dataset"] = _records(table, "group")

    if abstention is not None:
        flags = metrics.abstention(array, abstention)
        answered = ~flags.mask
        summary = flags.summary()
        summary["accuracy_answered"] = (
            float(np.mean(pred[answered] == true[answered])) if answered.any() else None
        )
        report["abstention"] = summary

    report["ablations"] = {}
    for name, variant in (ablations or {}).items():
        variant_probs = metrics._probabilities(variant)
        if variant_probs.shape != array.shape:
            raise DataError(
                f"ablation {name!r} probabilities have a different shape",
                expected=str(array.shape),
                got=str(variant_probs.shape),
            )
        report["ablations"][str(name)] = _scores(true, variant_probs, k)

    log.info(
        "evaluated %s samples of split %s: macro-F1 %.4f, accuracy %.4f",
        len(true),
        split,
        scores["macro_f1"],
        scores["accuracy"],
    )
    return _jsonable(report)


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write a report as JSON, atomically; an existing file is replaced whole.

    Raises DataError when the report lacks the keys evaluation_report writes
    or holds values that JSON cannot represent (NaN, arrays, objects).
    """
    _check_report(report, path)
    try:
        json.dumps(report, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"report is not plain JSON: {exc}",
            path=path,
            hint="build it with evaluation_report",
        ) from exc
    written = write_json(path, report)
    log.info("wrote evaluation report %s", written)
    return written


def read_report(path: str | Path) -> dict[str, Any]:
    """Load a report written by write_report; DataError if missing or malformed."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("evaluation report not found", path=path) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"evaluation report is not JSON: {exc}", path=path) from exc
    _check_report(report, path)
    return report


def _check_report(report: Any, path: str | Path | None = None) -> None:
    if not isinstance(report, Mapping):
        raise DataError(
            "evaluation report must be a JSON object",
            path=path,
            got=type(report).__name__,
        )
    missing = [key for key in REPORT_KEYS if key not in report]
    if missing:
        raise DataError(
            "evaluation report lacks keys",
            path=path,
            expected=", ".join(REPORT_KEYS),
            got=f"missing {', '.join(missing)}",
        )
