"""Evaluation: metrics, the evaluation report and the deployment gate.

Plain numpy and pandas, so that serving can score and abstain without torch or
scikit-learn.
"""

from mlkit.evaluate.gate import (
    GATE_KEYS,
    GateFailed,
    GateResult,
    check_gate,
    read_gate,
    write_gate,
)
from mlkit.evaluate.metrics import (
    ABSTENTION_REASONS,
    FITZPATRICK_GROUPS,
    UNKNOWN_GROUP,
    Abstention,
    AbstentionThresholds,
    abstention,
    abstention_thresholds,
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
from mlkit.evaluate.report import (
    REPORT_KEYS,
    evaluation_report,
    read_report,
    write_report,
)

__all__ = [
    "ABSTENTION_REASONS",
    "FITZPATRICK_GROUPS",
    "GATE_KEYS",
    "REPORT_KEYS",
    "UNKNOWN_GROUP",
    "Abstention",
    "AbstentionThresholds",
    "GateFailed",
    "GateResult",
    "abstention",
    "abstention_thresholds",
    "accuracy",
    "check_gate",
    "confusion",
    "coverage_accuracy",
    "evaluation_report",
    "expected_calibration_error",
    "group_metrics",
    "macro_f1",
    "per_class",
    "read_gate",
    "read_report",
    "reliability_table",
    "uncertainty_scores",
    "write_gate",
    "write_report",
]
