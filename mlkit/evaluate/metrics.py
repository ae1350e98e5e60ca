"""Classification metrics in plain numpy: scores, calibration, groups, abstention.

Serving and evaluation share these functions, so they import neither torch nor
scikit-learn. The F1 definitions follow scikit-learn's ``zero_division=0``
convention: a class with no true and no predicted samples scores 0, so a label
listed in ``labels`` that the model never predicts pulls macro-F1 down.

Targets and predictions are 1-D sequences of class names or class indices; the
two (and ``labels``) must be of the same kind, because mixing indices with
names silently matches nothing. Probability matrices have one row per sample
and one column per class, and their targets are column indices.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlkit.errors import ConfigError, DataError, describe_validation_error

log = logging.getLogger(__name__)

FITZPATRICK_GROUPS = ("I-II", "III-IV", "V-VI")
UNKNOWN_GROUP = "unknown"
ABSTENTION_REASONS = ("low_confidence", "small_top2_gap", "high_entropy")

# How far a probability row may sum away from 1: float32 softmax outputs are
# off by ~1e-7, anything beyond this is logits or a wrong axis.
_ROW_SUM_TOLERANCE = 1e-3


# --- input checks ---------------------------------------------------------------


def _kind(values: np.ndarray) -> str:
    """'number', 'string' or 'other', to catch indices mixed with names."""
    if values.dtype.kind in "biuf":
        return "number"
    if values.dtype.kind in "US":
        return "string"
    if values.dtype.kind == "O":
        if all(isinstance(v, str) for v in values):
            return "string"
        if all(
            isinstance(v, int | float | np.integer | np.floating)
            and not isinstance(v, bool)
            for v in values
        ):
            return "number"
    return "other"


def _as_1d(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(
            f"{name} must be one value per sample",
            expected="a 1-D sequence",
            got=f"shape {array.shape}",
        )
    return array


def _targets(
    y_true: Any, y_pred: Any, labels: Iterable[Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a pair of label arrays and the label list; empty is an error.

    Without ``labels`` the sorted union of both arrays is used, as scikit-learn
    does.
    """
    true = _as_1d("y_true", y_true)
    pred = _as_1d("y_pred", y_pred)
    if len(true) != len(pred):
        raise DataError(
            "y_true and y_pred differ in length",
            expected=f"{len(true)} predictions",
            got=str(len(pred)),
        )
    if len(true) == 0:
        raise DataError(
            "cannot score an empty set of predictions",
            hint="check that the evaluated split has rows",
        )
    if _kind(true) != _kind(pred):
        raise DataError(
            "y_true and y_pred hold different kinds of labels",
            expected="both class names or both class indices",
            got=f"{_kind(true)} and {_kind(pred)}",
        )

    if labels is None:
        label_array = np.asarray(sorted(set(true.tolist()) | set(pred.tolist())))
    else:
        label_array = _as_1d("labels", list(labels))
    if len(label_array) == 0:
        raise DataError("labels is empty", expected="at least one class")
    if len(pd.unique(label_array)) != len(label_array):
        duplicated = pd.Series(label_array).loc[lambda s: s.duplicated()].tolist()
        raise DataError("labels has duplicates", got=repr(duplicated))
    if _kind(label_array) != _kind(true):
        raise DataError(
            "labels and y_true hold different kinds of labels",
            expected="both class names or both class indices",
            got=f"{_kind(label_array)} and {_kind(true)}",
        )
    return true, pred, label_array


def _encode(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each value in ``labels``; -1 for values not listed."""
    return pd.Index(labels).get_indexer(values)


def _counts(
    y_true: Any, y_pred: Any, labels: Iterable[Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, true positives, true counts and predicted counts per label.

    Samples whose value is not in ``labels`` still count where the other side
    is listed: a true "c" predicted as "a" is a false positive of "a" even when
    only "a" and "b" are scored (scikit-learn does the same).
    """
    true, pred, label_array = _targets(y_true, y_pred, labels)
    k = len(label_array)
    t = _encode(true, label_array)
    p = _encode(pred, label_array)
    tp = np.bincount(t[(t >= 0) & (t == p)], minlength=k)
    true_sum = np.bincount(t[t >= 0], minlength=k)
    pred_sum = np.bincount(p[p >= 0], minlength=k)
    return label_array, tp, true_sum, pred_sum


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio with 0 where the denominator is 0."""
    numerator = numerator.astype(np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _probabilities(probs: Any) -> np.ndarray:
    """Validate a (samples, classes) probability matrix."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise DataError(
            "probabilities must have one row per sample and one column per class",
            got=f"shape {array.shape}",
        )
    if array.shape[0] == 0:
        raise DataError(
            "cannot score an empty set of predictions",
            hint="check that the evaluated split has rows",
        )
    if not np.isfinite(array).all():
        raise DataError("probabilities contain NaN or infinite values")
    if array.min() < 0 or array.max() > 1:
        raise DataError(
            "probabilities must lie in [0, 1]",
            got=f"range [{array.min():.4g}, {array.max():.4g}]",
            hint="apply softmax to logits first",
        )
    sums = array.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > _ROW_SUM_TOLERANCE:
        raise DataError(
            f"probability row {worst} does not sum to 1",
            got=f"{sums[worst]:.6g}",
            hint="apply softmax over the class axis",
        )
    return array


def _class_indices(y_true: Any, n_classes: int) -> np.ndarray:
    """Validate targets that index the columns of a probability matrix."""
    true = _as_1d("y_true", y_true)
    if _kind(true) != "number" or not np.all(np.equal(np.mod(true, 1), 0)):
        raise DataError(
            "y_true must be class indices (the columns of probs)",
            got=f"values of dtype {true.dtype}",
        )
    true = true.astype(np.int64)
    if len(true) and (true.min() < 0 or true.max() >= n_classes):
        raise DataError(
            "y_true has class indices outside the probability columns",
            expected=f"0..{n_classes - 1}",
            got=f"{true.min()}..{true.max()}",
        )
    return true


def _checked_pair(probs: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    array = _probabilities(probs)
    true = _class_indices(y_true, array.shape[1])
    if len(true) != len(array):
        raise DataError(
            "y_true and probs differ in length",
            expected=f"{len(array)} targets",
            got=str(len(true)),
        )
    return array, true


# --- scores -----------------------------------------------------------------------


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose prediction equals the target.

    Raises DataError for empty input, unequal lengths or mixed label kinds.
    """
    true, pred, _ = _targets(y_true, y_pred, labels=None)
    return float(np.mean(true == pred))


def macro_f1(y_true: Any, y_pred: Any, labels: Iterable[Any] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels``.

    Equal to scikit-learn's ``f1_score(average="macro", labels=labels,
    zero_division=0)``: a listed class that is never predicted (or never
    present) scores 0. Without ``labels`` the classes seen in either array are
    scored. Unlike scikit-learn, duplicated or empty ``labels`` and empty input
    raise DataError instead of returning a number.
    """
    _, tp, true_sum, pred_sum = _counts(y_true, y_pred, labels)
    f1 = _divide(2 * tp, true_sum + pred_sum)
    return float(np.mean(f1))


def per_class(
    y_true: Any, y_pred: Any, labels: Iterable[Any] | None = None
) -> pd.DataFrame:
    """Precision, recall, F1 and support (true count) per class, in label order.

    Ratios with a zero denominator are 0, as in ``macro_f1``.
    """
    label_array, tp, true_sum, pred_sum = _counts(y_true, y_pred, labels)
    table = pd.DataFrame(
        {
            "precision": _divide(tp, pred_sum),
            "recall": _divide(tp, true_sum),
            "f1": _divide(2 * tp, true_sum + pred_sum),
            "support": true_sum.astype(np.int64),
        },
        index=pd.Index(label_array.tolist(), name="label"),
    )
    return table


def confusion(
    y_true: Any, y_pred: Any, labels: Iterable[Any] | None = None
) -> np.ndarray:
    """Confusion counts: row = true class, column = predicted class.

    Rows and columns follow ``labels`` exactly; samples whose true or predicted
    value is not listed are left out (as scikit-learn's confusion_matrix does).
    """
    true, pred, label_array = _targets(y_true, y_pred, labels)
    k = len(label_array)
    t = _encode(true, label_array)
    p = _encode(pred, label_array)
    listed = (t >= 0) & (p >= 0)
    counts = np.bincount(t[listed] * k + p[listed], minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


# --- calibration ------------------------------------------------------------------


def _check_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer):
        raise ConfigError(f"n_bins must be an integer, got {n_bins!r}")
    if n_bins < 1:
        raise ConfigError(f"n_bins must be at least 1, got {n_bins}")


def reliability_table(probs: Any, y_true: Any, n_bins: int = 15) -> pd.DataFrame:
    """Confidence against accuracy in equal-width confidence bins.

    Confidence is the largest class probability; a sample falls in the bin
    ``(lower, upper]`` (the first bin also takes 0). One row per bin, empty bins
    included with count 0 and NaN confidence, accuracy and gap. ``gap`` is
    accuracy minus confidence: negative means overconfident.
    """
    _check_bins(n_bins)
    array, true = _checked_pair(probs, y_true)
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == true).astype(np.float64)

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)

    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_acc = np.where(count > 0, correct_sum / count, np.nan)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count.astype(np.int64),
            "confidence": mean_conf,
            "accuracy": mean_acc,
            "gap": mean_acc - mean_conf,
        }
    )


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width bins, weighted by bin size.

    0 means perfectly calibrated; a model that says 0.99 and is right half the
    time scores about 0.49. Raises DataError for probabilities that are not a
    valid (samples, classes) matrix or targets that are not column indices.
    """
    table = reliability_table(probs, y_true, n_bins=n_bins)
    filled = table[table["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float((weights * filled["gap"].abs()).sum())


# --- groups -----------------------------------------------------------------------


def _group_names(groups: Any, unknown: str) -> np.ndarray:
    """Group of each sample as a string; missing values become ``unknown``."""
    series = pd.Series(_as_1d("groups", groups), dtype=object)
    names = series.where(series.notna(), unknown).astype(str)
    return names.to_numpy(dtype=object)


def group_metrics(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    labels: Iterable[Any] | None = None,
    *,
    expected: Sequence[str] | None = None,
    unknown: str = UNKNOWN_GROUP,
) -> pd.DataFrame:
    """Sample count, accuracy and macro-F1 per group (skin-tone group, dataset).

    Missing group values (None, NaN, NA) form their own ``unknown`` group,
    reported last so that it is never mixed with a real group. Groups named in
    ``expected`` are always listed, with n = 0 and NaN scores when empty; any
    other group value then raises DataError (a typo such as "I - II" would
    otherwise hide a group). Without ``expected``, groups are sorted by name.

    Macro-F1 of a group averages over the listed labels that occur in that
    group's targets or predictions: a class absent from a small group is not
    scored as 0 there, while a class the model wrongly predicts in the group
    still counts. ``n_labels`` says how many classes each group's score
    averages.
    """
    true, pred, label_array = _targets(y_true, y_pred, labels)
    names = _group_names(groups, unknown)
    if len(names) != len(true):
        raise DataError(
            "groups and y_true differ in length",
            expected=f"{len(true)} group values",
            got=str(len(names)),
        )

    present = sorted(set(names.tolist()) - {unknown})
    if expected is not None:
        stray = sorted(set(present) - set(expected))
        if stray:
            raise DataError(
                "unexpected group values",
                expected=", ".join(expected) + " or missing",
                got=", ".join(map(repr, stray)),
            )
        order = [*expected, unknown]
    else:
        order = present + ([unknown] if unknown in set(names.tolist()) else [])

    rows = []
    for name in order:
        member = names == name
        n = int(member.sum())
        if n == 0:
            if name == unknown and expected is None:
                continue
            empty = {"accuracy": np.nan, "macro_f1": np.nan}
            rows.append({"group": name, "n": 0, "n_labels": 0, **empty})
            continue
        seen = set(true[member].tolist()) | set(pred[member].tolist())
        scored = [label for label in label_array.tolist() if label in seen]
        rows.append(
            {
                "group": name,
                "n": n,
                "n_labels": len(scored),
                "accuracy": float(np.mean(true[member] == pred[member])),
                "macro_f1": (
                    macro_f1(true[member], pred[member], scored) if scored else np.nan
                ),
            }
        )
    table = pd.DataFrame(
        rows, columns=["group", "n", "n_labels", "accuracy", "macro_f1"]
    )
    return table.set_index("group").astype(
        {"n": np.int64, "n_labels": np.int64, "accuracy": float, "macro_f1": float}
    )


# --- abstention -------------------------------------------------------------------


class AbstentionThresholds(BaseModel):
    """When the model should decline to answer; each rule is off when None.

    - ``confidence``: abstain when the top probability is below it.
    - ``top2_gap``: abstain when the top two probabilities differ by less.
    - ``normalized_entropy``: abstain when the entropy of the probabilities,
      divided by its maximum log(classes), is above it.

    Every threshold lies in [0, 1].
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    top2_gap: float | None = Field(default=None, ge=0.0, le=1.0)
    normalized_entropy: float | None = Field(default=None, ge=0.0, le=1.0)


def abstention_thresholds(
    thresholds: AbstentionThresholds | Mapping[str, Any] | None,
) -> AbstentionThresholds:
    """Validate thresholds given as a model or a mapping; ConfigError if bad."""
    if isinstance(thresholds, AbstentionThresholds):
        return thresholds
    try:
        return AbstentionThresholds.model_validate(dict(thresholds or {}))
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"invalid abstention thresholds: {problems}") from exc


def uncertainty_scores(probs: Any) -> pd.DataFrame:
    """Per-sample confidence, top-2 gap and normalized entropy (all in [0, 1]).

    With a single class the top-2 gap is the top probability and the entropy
    is 0.
    """
    array = _probabilities(probs)
    n_classes = array.shape[1]
    ordered = np.sort(array, axis=1)
    confidence = ordered[:, -1]
    second = ordered[:, -2] if n_classes > 1 else np.zeros(len(array))

    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(array > 0, array * np.log(array), 0.0)
    entropy = -terms.sum(axis=1)
    if n_classes > 1:
        normalized = np.clip(entropy / np.log(n_classes), 0.0, 1.0)
    else:
        normalized = np.zeros(len(array))
    return pd.DataFrame(
        {
            "confidence": confidence,
            "top2_gap": confidence - second,
            "normalized_entropy": normalized,
        }
    )


@dataclass(frozen=True)
class Abstention:
    """Which samples to abstain on, and why.

    ``mask`` is True where the model should not answer. ``reasons`` has one
    boolean column per rule (``ABSTENTION_REASONS``); a sample can have
    several. ``scores`` holds the measured values behind the rules.
    """

    mask: np.ndarray
    reasons: pd.DataFrame
    scores: pd.DataFrame
    thresholds: AbstentionThresholds

    def reason_lists(self) -> list[list[str]]:
        """The names of the rules each sample failed; empty when answered."""
        flags = self.reasons.to_numpy()
        names = list(self.reasons.columns)
        return [[names[j] for j in np.flatnonzero(row)] for row in flags]

    def summary(self) -> dict[str, Any]:
        """Counts for a report: samples, abstentions, coverage, per reason."""
        n = len(self.mask)
        abstained = int(self.mask.sum())
        return {
            "n": n,
            "abstained": abstained,
            "coverage": (n - abstained) / n if n else float("nan"),
            "reasons": {
                name: int(self.reasons[name].sum()) for name in self.reasons.columns
            },
            "thresholds": self.thresholds.model_dump(),
        }


def abstention(
    probs: Any, thresholds: AbstentionThresholds | Mapping[str, Any] | None = None
) -> Abstention:
    """Flag samples whose probabilities are too uncertain to act on.

    A sample is flagged when any enabled rule fires; see AbstentionThresholds.
    Raises ConfigError for thresholds outside [0, 1] or unknown rule names, and
    DataError for an invalid probability matrix.
    """
    rules = abstention_thresholds(thresholds)
    scores = uncertainty_scores(probs)
    n = len(scores)
    off = np.zeros(n, dtype=bool)

    reasons = pd.DataFrame(
        {
            "low_confidence": (
                off
                if rules.confidence is None
                else scores["confidence"].to_numpy() < rules.confidence
            ),
            "small_top2_gap": (
                off
                if rules.top2_gap is None
                else scores["top2_gap"].to_numpy() < rules.top2_gap
            ),
            "high_entropy": (
                off
                if rules.normalized_entropy is None
                else scores["normalized_entropy"].to_numpy() > rules.normalized_entropy
            ),
        }
    )
    mask = reasons.to_numpy().any(axis=1)
    log.debug("abstention: %s of %s samples flagged", int(mask.sum()), n)
    return Abstention(mask=mask, reasons=reasons, scores=scores, thresholds=rules)


def coverage_accuracy(
    probs: Any, y_true: Any, thresholds: Iterable[float] | None = None
) -> pd.DataFrame:
    """Accuracy on the samples kept as the confidence threshold rises.

    A sample is kept when its top probability is at least the threshold (the
    complement of the ``confidence`` abstention rule). Default thresholds are
    0, 0.05, ..., 1. ``accuracy`` is NaN where nothing is kept. Raises
    ConfigError for thresholds outside [0, 1].
    """
    array, true = _checked_pair(probs, y_true)
    if thresholds is None:
        steps = np.round(np.linspace(0.0, 1.0, 21), 10)
    else:
        steps = np.asarray(list(thresholds), dtype=np.float64)
    if steps.ndim != 1 or len(steps) == 0:
        raise ConfigError("coverage thresholds must be a non-empty list of numbers")
    if not np.isfinite(steps).all() or steps.min() < 0 or steps.max() > 1:
        raise ConfigError(f"coverage thresholds must lie in [0, 1], got {steps}")

    confidence = array.max(axis=1)
    correct = array.argmax(axis=1) == true
    kept = confidence[None, :] >= steps[:, None]
    n_kept = kept.sum(axis=1)
    n_correct = (kept & correct[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n_kept > 0, n_correct / n_kept, np.nan)
    return pd.DataFrame(
        {
            "threshold": steps,
            "n_kept": n_kept.astype(np.int64),
            "coverage": n_kept / len(true),
            "accuracy": acc,
        }
    )
