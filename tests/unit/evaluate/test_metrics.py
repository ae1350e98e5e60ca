from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from mlkit.errors import ConfigError, DataError
from mlkit.evaluate.metrics import (
    ABSTENTION_REASONS,
    FITZPATRICK_GROUPS,
    AbstentionThresholds,
    abstention,
    accuracy,
    confusion,
    coverage_accuracy,
    expected_calibration_error,
    group_metrics,
    macro_f1,
    per_class,
    reliability_table,
    uncertainty_scores,
)


@st.composite
def label_arrays(draw):
    """Targets, predictions and a label list that may miss or add classes."""
    n_classes = draw(st.integers(1, 6))
    n = draw(st.integers(1, 40))
    values = st.integers(0, n_classes - 1)
    y_true = draw(st.lists(values, min_size=n, max_size=n))
    y_pred = draw(st.lists(values, min_size=n, max_size=n))
    pool = list(range(n_classes + 2))
    labels = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
    return y_true, y_pred, labels


@settings(max_examples=200, deadline=None)
@given(label_arrays())
def test_macro_f1_equals_sklearn(case):
    y_true, y_pred, labels = case
    expected = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels) == expected


@settings(max_examples=100, deadline=None)
@given(label_arrays())
def test_macro_f1_equals_sklearn_for_string_labels(case):
    y_true, y_pred, labels = ([f"class {v}" for v in values] for values in case)
    expected = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels) == expected


# scikit-learn warns about a 1x1 confusion matrix even when labels are given.
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=100, deadline=None)
@given(label_arrays())
def test_per_class_and_confusion_equal_sklearn(case):
    y_true, y_pred, labels = case
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    table = per_class(y_true, y_pred, labels)
    assert list(table.index) == labels
    np.testing.assert_allclose(table["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(table["recall"], recall, atol=1e-12)
    np.testing.assert_allclose(table["f1"], f1, atol=1e-12)
    np.testing.assert_array_equal(table["support"], support)
    matrix = confusion(y_true, y_pred, labels)
    if set(labels) & set(y_true):
        expected = confusion_matrix(y_true, y_pred, labels=labels)
        np.testing.assert_array_equal(matrix, expected)
    else:
        # scikit-learn refuses this case; no listed true class means no counts.
        assert matrix.shape == (len(labels), len(labels)) and not matrix.any()


def test_a_class_never_predicted_scores_zero():
    y_true = ["eczema", "eczema", "acne", "acne"]
    y_pred = ["eczema", "eczema", "eczema", "eczema"]
    # eczema: P 0.5, R 1 -> F1 2/3; acne never predicted -> 0; tinea absent -> 0.
    assert macro_f1(y_true, y_pred, ["eczema", "acne"]) == pytest.approx(1 / 3)
    assert macro_f1(y_true, y_pred, ["eczema", "acne", "tinea"]) == pytest.approx(2 / 9)


def test_without_labels_the_seen_classes_are_scored():
    assert macro_f1([0, 1, 1], [0, 1, 2]) == pytest.approx(
        f1_score([0, 1, 1], [0, 1, 2], average="macro", zero_division=0)
    )


def test_one_class():
    assert macro_f1(["a", "a"], ["a", "a"], ["a"]) == 1.0
    assert accuracy(["a", "a"], ["a", "a"]) == 1.0
    np.testing.assert_array_equal(confusion(["a"], ["a"], ["a"]), [[1]])


def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert accuracy(np.array(["x", "y"]), pd.Series(["y", "y"])) == 0.5


@pytest.mark.parametrize(
    "call",
    [
        lambda: macro_f1([], [], [0]),
        lambda: accuracy([], []),
        lambda: per_class([], [], ["a"]),
        lambda: confusion([], [], ["a"]),
    ],
)
def test_empty_input_is_a_clear_error(call):
    with pytest.raises(DataError, match="empty set of predictions"):
        call()


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels", "message"),
    [
        ([0, 1], [0], None, "differ in length"),
        (["a", "b"], [0, 1], None, "different kinds"),
        ([0, 1], [0, 1], ["0", "1"], "labels and y_true hold different kinds"),
        ([0, 1], [0, 1], [], "labels is empty"),
        ([0, 1], [0, 1], [0, 1, 0], "duplicates"),
        ([[0, 1]], [[0, 1]], None, "1-D"),
    ],
)
def test_bad_label_input_is_rejected(y_true, y_pred, labels, message):
    with pytest.raises(DataError, match=message):
        macro_f1(y_true, y_pred, labels)


def test_confusion_follows_the_given_label_order():
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "a"]
    matrix = confusion(y_true, y_pred, ["c", "b", "a"])
    expected = [[0, 0, 1], [0, 1, 0], [0, 1, 1]]
    np.testing.assert_array_equal(matrix, expected)


# --- calibration -------------------------------------------------------------------


def calibrated(n: int, seed: int, overconfident: bool = False):
    """Three-class probabilities whose top class is right with probability equal
    to its confidence (or, when overconfident, right half the time at 0.99)."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.4, 1.0, n) if not overconfident else np.full(n, 0.99)
    predicted = rng.integers(0, 3, n)
    probs = np.empty((n, 3))
    probs[:] = ((1 - top) / 2)[:, None]
    probs[np.arange(n), predicted] = top
    hit_rate = top if not overconfident else np.full(n, 0.5)
    right = rng.random(n) < hit_rate
    wrong = (predicted + rng.integers(1, 3, n)) % 3
    return probs, np.where(right, predicted, wrong)


def test_ece_is_near_zero_when_calibrated():
    probs, y_true = calibrated(20_000, seed=1)
    assert expected_calibration_error(probs, y_true) < 0.02


def test_ece_is_large_when_overconfident():
    probs, y_true = calibrated(5_000, seed=2, overconfident=True)
    assert expected_calibration_error(probs, y_true) == pytest.approx(0.49, abs=0.03)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y_true = [0, 1, 1, 1]
    # Two bins: (0, 0.5] is empty; (0.5, 1] holds all four with mean confidence
    # 0.75 and accuracy 0.75.
    assert expected_calibration_error(probs, y_true, n_bins=2) == pytest.approx(0)
    # Ten bins: 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right) each alone:
    # gaps 0.1, 0.8, 0.3, 0.4, each weighted 1/4.
    assert expected_calibration_error(probs, y_true, n_bins=10) == pytest.approx(0.4)


def test_reliability_table_lists_every_bin():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    table = reliability_table(probs, [0, 1, 1, 1], n_bins=5)
    assert len(table) == 5
    assert table["count"].tolist() == [0, 0, 1, 2, 1]
    assert np.isnan(table.loc[0, "accuracy"])
    row = table.loc[3]  # (0.6, 0.8]: 0.7 right and 0.8 wrong
    assert row["confidence"] == pytest.approx(0.75)
    assert row["accuracy"] == pytest.approx(0.5)
    assert row["gap"] == pytest.approx(-0.25)


@pytest.mark.parametrize(
    ("probs", "y_true", "error", "message"),
    [
        ([[0.5, 0.5]], [0], ConfigError, "n_bins"),
        ([[2.0, -1.0]], [0], DataError, r"\[0, 1\]"),
        ([[0.5, 0.2]], [0], DataError, "does not sum to 1"),
        ([[0.5, 0.5]], [2], DataError, "outside the probability columns"),
        ([[0.5, 0.5]], ["a"], DataError, "class indices"),
        ([[0.5, 0.5]], [0, 1], DataError, "differ in length"),
        (np.empty((0, 2)), [], DataError, "empty"),
        ([0.5, 0.5], [0], DataError, "one row per sample"),
    ],
)
def test_calibration_input_errors(probs, y_true, error, message):
    n_bins = 0 if error is ConfigError else 15
    with pytest.raises(error, match=message):
        expected_calibration_error(probs, y_true, n_bins=n_bins)


# --- groups ------------------------------------------------------------------------


def test_fitzpatrick_groups_keep_unknown_apart_and_list_empty_groups():
    y_true = ["a", "a", "b", "b", "a", "b"]
    y_pred = ["a", "b", "b", "b", "a", "a"]
    groups = ["I-II", "I-II", "III-IV", "III-IV", None, np.nan]
    table = group_metrics(
        y_true, y_pred, groups, ["a", "b"], expected=FITZPATRICK_GROUPS
    )
    assert list(table.index) == ["I-II", "III-IV", "V-VI", "unknown"]
    assert table["n"].tolist() == [2, 2, 0, 2]
    assert table.loc["I-II", "accuracy"] == 0.5
    assert table.loc["III-IV", "macro_f1"] == 1.0
    assert table.loc["III-IV", "n_labels"] == 1  # only "b" occurs in III-IV
    assert np.isnan(table.loc["V-VI", "macro_f1"])
    assert table.loc["unknown", "accuracy"] == 0.5
    assert table.loc["I-II", "macro_f1"] == pytest.approx(
        macro_f1(["a", "a"], ["a", "b"], ["a", "b"])
    )


def test_unexpected_group_value_is_an_error():
    with pytest.raises(DataError, match="'I - II'"):
        group_metrics(["a"], ["a"], ["I - II"], expected=FITZPATRICK_GROUPS)


def test_dataset_groups_are_sorted_with_unknown_last():
    groups = pd.Series(["scin", "isic", pd.NA, "isic"], dtype="string")
    table = group_metrics([0, 1, 1, 0], [0, 1, 0, 0], groups, [0, 1])
    assert list(table.index) == ["isic", "scin", "unknown"]
    assert table["n"].tolist() == [2, 1, 1]
    assert table.loc["unknown", "accuracy"] == 0.0


def test_group_length_must_match():
    with pytest.raises(DataError, match="groups and y_true differ"):
        group_metrics([0, 1], [0, 1], ["isic"])


# --- abstention --------------------------------------------------------------------

PROBS = np.array(
    [
        [0.96, 0.02, 0.02],  # confident
        [0.50, 0.45, 0.05],  # small gap
        [0.34, 0.33, 0.33],  # near uniform: every rule fires
        [0.70, 0.10, 0.20],  # moderate
    ]
)


def test_uncertainty_scores():
    scores = uncertainty_scores(PROBS)
    assert scores["confidence"].tolist() == pytest.approx([0.96, 0.5, 0.34, 0.7])
    assert scores["top2_gap"].tolist() == pytest.approx([0.94, 0.05, 0.01, 0.5])
    entropy = scores["normalized_entropy"]
    assert entropy[2] == pytest.approx(1.0, abs=1e-3)
    assert entropy[0] < 0.2
    one_hot = uncertainty_scores([[1.0, 0.0, 0.0]])
    assert one_hot["normalized_entropy"][0] == 0.0
    single = uncertainty_scores([[1.0]])
    assert single["top2_gap"][0] == 1.0
    assert single["normalized_entropy"][0] == 0.0


def test_each_abstention_reason_is_reported():
    result = abstention(
        PROBS, {"confidence": 0.6, "top2_gap": 0.1, "normalized_entropy": 0.9}
    )
    assert list(result.reasons.columns) == list(ABSTENTION_REASONS)
    assert result.reasons["low_confidence"].tolist() == [False, True, True, False]
    assert result.reasons["small_top2_gap"].tolist() == [False, True, True, False]
    assert result.reasons["high_entropy"].tolist() == [False, False, True, False]
    assert result.mask.tolist() == [False, True, True, False]
    assert result.reason_lists() == [
        [],
        ["low_confidence", "small_top2_gap"],
        list(ABSTENTION_REASONS),
        [],
    ]
    summary = result.summary()
    assert summary["abstained"] == 2
    assert summary["coverage"] == 0.5
    assert summary["reasons"] == {
        "low_confidence": 2,
        "small_top2_gap": 2,
        "high_entropy": 1,
    }


def test_disabled_rules_never_fire():
    result = abstention(PROBS, AbstentionThresholds(top2_gap=0.1))
    assert result.mask.tolist() == [False, True, True, False]
    assert not result.reasons["low_confidence"].any()
    assert not abstention(PROBS).mask.any()


@pytest.mark.parametrize(
    "thresholds",
    [
        {"confidence": 1.5},
        {"top2_gap": -0.1},
        {"normalized_entropy": 2},
        {"entropy": 0.5},
    ],
)
def test_abstention_thresholds_are_validated(thresholds):
    key = next(iter(thresholds))
    with pytest.raises(ConfigError, match=key):
        abstention(PROBS, thresholds)


def test_coverage_accuracy():
    y_true = [0, 1, 2, 0]  # right, wrong, wrong, right
    table = coverage_accuracy(PROBS, y_true, thresholds=[0.0, 0.5, 0.9, 1.0])
    assert table["coverage"].tolist() == [1.0, 0.75, 0.25, 0.0]
    assert table["n_kept"].tolist() == [4, 3, 1, 0]
    assert table["accuracy"][:3].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert np.isnan(table["accuracy"][3])


def test_coverage_accuracy_default_thresholds_are_monotone():
    probs, y_true = calibrated(2_000, seed=3)
    table = coverage_accuracy(probs, y_true)
    assert len(table) == 21
    assert table["coverage"].iloc[0] == 1.0
    assert table["accuracy"].iloc[0] == pytest.approx(
        accuracy(y_true, probs.argmax(axis=1))
    )
    assert (np.diff(table["coverage"]) <= 0).all()
    # Calibrated: accuracy rises as only confident samples remain.
    assert table["accuracy"].iloc[16] > table["accuracy"].iloc[0] + 0.2


@pytest.mark.parametrize("thresholds", [[], [1.2], [-0.1, 0.5]])
def test_coverage_thresholds_are_validated(thresholds):
    with pytest.raises(ConfigError, match="coverage thresholds"):
        coverage_accuracy(PROBS, [0, 1, 2, 0], thresholds)


def test_importing_evaluate_loads_neither_torch_nor_sklearn():
    code = (
        "import sys, mlkit.evaluate; "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
