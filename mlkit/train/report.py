"""Plots of a training run, for the training notebook and the book."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlkit.train.dataset import ManifestDataset


def _title(text: str, synthetic: bool) -> str:
    return f"{text} (synthetic data)" if synthetic else text


def plot_history(history: pd.DataFrame, *, synthetic: bool = False) -> Figure:
    """Learning curves: losses and validation macro-F1 per epoch."""
    import matplotlib.pyplot as plt

    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_ax.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    loss_ax.plot(history["epoch"], history["val_loss"], marker="o", label="val")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    loss_ax.set_title(_title("Loss", synthetic))
    f1_ax.plot(history["epoch"], history["val_macro_f1"], marker="o", color="C2")
    best = history.loc[history["val_macro_f1"].idxmax()]
    f1_ax.axvline(best["epoch"], color="grey", linestyle=":", label="best epoch")
    f1_ax.set_ylim(0, 1)
    f1_ax.set_xlabel("epoch")
    f1_ax.set_ylabel("validation macro-F1")
    f1_ax.legend()
    f1_ax.set_title(_title("Validation macro-F1", synthetic))
    fig.tight_layout()
    return fig


def plot_predictions(
    dataset: ManifestDataset,
    probs: np.ndarray,
    classes: list[str],
    *,
    n: int = 8,
    seed: int = 0,
) -> Figure:
    """A grid of images with their true and predicted class."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    cols = min(4, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows))
    for ax, i in zip(np.atleast_1d(axes).ravel(), picks, strict=False):
        true = classes[int(dataset.targets[i])]
        pred = classes[int(probs[i].argmax())]
        ax.imshow(dataset.image(int(i)))
        ax.set_title(
            f"true: {true}\npred: {pred} ({probs[i].max():.2f})",
            fontsize=8,
            color="black" if true == pred else "red",
        )
        ax.axis("off")
    for ax in np.atleast_1d(axes).ravel()[len(picks) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig
