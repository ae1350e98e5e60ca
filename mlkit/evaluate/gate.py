"""The deployment gate: a model ships only if its macro-F1 beats a threshold.

``write_gate`` is the only way to produce ``gate.json``, and it writes the file
only for a passing report. Deployment reads it back with ``read_gate`` and
compares the recorded model sha256 with the weights it is about to serve.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlkit._io import write_json
from mlkit.errors import ConfigError, DataError, MlkitError
from mlkit.evaluate.report import _SHA256

log = logging.getLogger(__name__)

GATE_VERSION = 1
GATE_METRIC = "macro_f1"
GATE_KEYS = (
    "gate_version",
    "passed",
    "metric",
    "measured",
    "threshold",
    "model_sha256",
    "dataset_sha256",
    "synthetic",
    "metrics",
    "created_at",
)


class GateFailed(MlkitError):
    """The evaluated model does not beat the deployment threshold."""

    def __init__(self, measured: float, threshold: float) -> None:
        self.measured = measured
        self.threshold = threshold
        shown_measured, shown_threshold = _format_pair(measured, threshold)
        super().__init__(
            f"macro-F1 {shown_measured} is not above the gate threshold "
            f"{shown_threshold}"
        )


def _format_pair(measured: float, threshold: float) -> tuple[str, str]:
    """Three decimals, or more when three would make different numbers look
    equal (0.4996 against 0.4999)."""
    for digits in range(3, 7):
        pair = (f"{measured:.{digits}f}", f"{threshold:.{digits}f}")
        if pair[0] != pair[1] or measured == threshold:
            return pair
    return pair


@dataclass(frozen=True)
class GateResult:
    """Outcome of comparing a report's macro-F1 with the threshold."""

    passed: bool
    measured: float
    threshold: float


def _check_threshold(min_macro_f1: Any) -> float:
    if isinstance(min_macro_f1, bool) or not isinstance(min_macro_f1, int | float):
        raise ConfigError(f"gate threshold must be a number, got {min_macro_f1!r}")
    threshold = float(min_macro_f1)
    if not (0.0 <= threshold < 1.0):
        raise ConfigError(
            f"gate threshold must be in [0, 1) (a macro-F1 cannot exceed 1), "
            f"got {min_macro_f1!r}"
        )
    return threshold


def _measured(report: Any) -> float:
    metrics = report.get("metrics") if isinstance(report, dict) else None
    value = metrics.get(GATE_METRIC) if isinstance(metrics, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise DataError(
            "evaluation report has no usable macro-F1",
            column="metrics.macro_f1",
            expected="a finite number",
            got=repr(value),
        )
    return float(value)


def check_gate(report: dict[str, Any], min_macro_f1: float) -> GateResult:
    """Compare the report's macro-F1 with the threshold; passing is strictly above.

    Raises ConfigError for a threshold outside [0, 1) and DataError when the
    report has no finite ``metrics.macro_f1``.
    """
    threshold = _check_threshold(min_macro_f1)
    measured = _measured(report)
    return GateResult(
        passed=measured > threshold, measured=measured, threshold=threshold
    )


def write_gate(path: str | Path, report: dict[str, Any], min_macro_f1: float) -> Path:
    """Write ``gate.json`` for a report that passes, or raise GateFailed.

    The file records the model and dataset (manifest) sha256 from the report,
    its metrics, the threshold and the UTC time. When the gate fails, a
    ``gate.json`` left at ``path`` by an earlier run is removed first, so a
    stale pass can never be deployed alongside a failing model.
    """
    path = Path(path)
    result = check_gate(report, min_macro_f1)
    if not result.passed:
        if path.exists():
            log.warning("gate failed: removing stale %s", path)
            path.unlink()
        raise GateFailed(result.measured, result.threshold)

    missing = [
        key
        for key in ("model_sha256", "manifest_sha256", "synthetic")
        if key not in report
    ]
    if missing:
        raise DataError(
            "evaluation report lacks keys the gate records",
            got=f"missing {', '.join(missing)}",
            hint="build the report with evaluation_report",
        )
    gate = {
        "gate_version": GATE_VERSION,
        "passed": True,
        "metric": GATE_METRIC,
        "measured": result.measured,
        "threshold": result.threshold,
        "model_sha256": report["model_sha256"],
        "dataset_sha256": report["manifest_sha256"],
        "synthetic": report["synthetic"],
        "metrics": report["metrics"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _check_gate(gate, path)
    written = write_json(path, gate)
    log.info(
        "gate passed: macro-F1 %.4f > %.4f; wrote %s",
        result.measured,
        result.threshold,
        written,
    )
    return written


def read_gate(path: str | Path) -> dict[str, Any]:
    """Load and validate a ``gate.json`` written by write_gate.

    Raises DataError when the file is missing, is not JSON, lacks a key,
    records a measurement that does not beat its threshold, or holds a
    malformed sha256.
    """
    path = Path(path)
    try:
        gate = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(
            "gate file not found",
            path=path,
            hint="the model has not passed the evaluation gate",
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"gate file is not JSON: {exc}", path=path) from exc
    _check_gate(gate, path)
    return gate


def _check_gate(gate: Any, path: Path) -> None:
    if not isinstance(gate, dict):
        raise DataError(
            "gate file must hold a JSON object", path=path, got=type(gate).__name__
        )
    missing = [key for key in GATE_KEYS if key not in gate]
    if missing:
        raise DataError(
            "gate file lacks keys",
            path=path,
            expected=", ".join(GATE_KEYS),
            got=f"missing {', '.join(missing)}",
        )
    for key in ("model_sha256", "dataset_sha256"):
        if not isinstance(gate[key], str) or not _SHA256.fullmatch(gate[key]):
            raise DataError(
                "not a sha256 hex digest", path=path, column=key, got=repr(gate[key])
            )
    if gate["metric"] != GATE_METRIC:
        raise DataError(
            "unknown gate metric",
            path=path,
            column="metric",
            expected=repr(GATE_METRIC),
            got=repr(gate["metric"]),
        )
    numbers = [gate["measured"], gate["threshold"]]
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in numbers
    ):
        raise DataError(
            "gate measured and threshold must be finite numbers",
            path=path,
            got=repr(numbers),
        )
    if gate["passed"] is not True or not gate["measured"] > gate["threshold"]:
        raise DataError(
            "gate file does not record a pass",
            path=path,
            expected="passed true and measured above threshold",
            got=(
                f"passed {gate['passed']!r}, measured {gate['measured']!r}, "
                f"threshold {gate['threshold']!r}"
            ),
        )
