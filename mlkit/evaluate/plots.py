"""Plots and tables of an evaluation report, for the notebook and the book."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _title(text: str, report: dict[str, Any]) -> str:
    return f"{text} (synthetic data)" if report.get("synthetic") else text


def metrics_table(report: dict[str, Any]) -> pd.DataFrame:
    """Headline metrics of the evaluated split as a one-column table."""
    metrics = report["metrics"]
    return pd.DataFrame(
        {
            "value": [
                metrics["n"],
                metrics["macro_f1"],
                metrics["accuracy"],
                metrics["ece"],
            ]
        },
        index=["test rows", "macro-F1", "accuracy", "expected calibration error"],
    )


def group_table(report: dict[str, Any], by: str) -> pd.DataFrame:
    """Per-group metrics (``fitzpatrick_group`` or ``dataset``) as a table."""
    return pd.DataFrame(report["groups"][by]).set_index("group")


def ablation_table(report: dict[str, Any]) -> pd.DataFrame:
    """Macro-F1 and accuracy of every ablation on the same test rows."""
    rows = {
        name: {"macro_f1": values["macro_f1"], "accuracy": values["accuracy"]}
        for name, values in (report.get("ablations") or {}).items()
    }
    return pd.DataFrame(rows).T


def plot_confusion(report: dict[str, Any]) -> Figure:
    """Confusion matrix heatmap, rows normalized to the true class."""
    import matplotlib.pyplot as plt

    labels = report["confusion"]["labels"]
    matrix = np.asarray(report["confusion"]["matrix"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * len(labels) + 3, 0.5 * len(labels) + 2))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, int(count), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set_title(_title("Confusion matrix", report))
    fig.tight_layout()
    return fig


def plot_groups(report: dict[str, Any], by: str = "fitzpatrick_group") -> Figure:
    """Macro-F1 per group, with the overall macro-F1 as a line."""
    import matplotlib.pyplot as plt

    table = group_table(report, by)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(table.index.astype(str), table["macro_f1"].astype(float).fillna(0))
    ax.axhline(
        report["metrics"]["macro_f1"], color="grey", linestyle=":", label="overall"
    )
    for x, n in enumerate(table["n"]):
        ax.text(x, 0.02, f"n={int(n)}", ha="center", fontsize=8, color="white")
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1")
    ax.legend(loc="lower right")
    ax.set_title(_title(f"Macro-F1 per {by.replace('_', ' ')}", report))
    fig.tight_layout()
    return fig


def plot_reliability(report: dict[str, Any]) -> Figure:
    """Reliability diagram: accuracy against confidence per bin."""
    import matplotlib.pyplot as plt

    table = pd.DataFrame(report["calibration"]["reliability"])
    table = table[table["count"] > 0]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    ax.plot(table["confidence"], table["accuracy"], marker="o", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ece = report["calibration"]["ece"]
    ax.set_title(_title(f"Reliability (ECE {ece:.3f})", report))
    fig.tight_layout()
    return fig
