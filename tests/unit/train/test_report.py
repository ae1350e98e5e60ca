import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from mlkit.train.report import plot_history, plot_predictions  # noqa: E402


def test_history_plot_marks_the_best_epoch_and_synthetic_data():
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [2.0, 1.0, 0.5],
            "val_loss": [2.1, 1.2, 0.9],
            "val_macro_f1": [0.3, 0.8, 0.7],
        }
    )
    fig = plot_history(history, synthetic=True)
    loss_ax, f1_ax = fig.axes
    assert f1_ax.get_title() == "Validation macro-F1 (synthetic data)"
    best_line = [line for line in f1_ax.get_lines() if line.get_linestyle() == ":"]
    assert best_line[0].get_xdata()[0] == 2
    plt.close(fig)


def test_prediction_grid_marks_errors_in_red():
    class Dataset:
        targets = np.array([0, 1, 1])

        def __len__(self):
            return 3

        def image(self, i):
            return Image.new("RGB", (4, 4))

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    fig = plot_predictions(Dataset(), probs, ["a", "b"], n=3, seed=1)
    titles = {ax.get_title(): ax.title.get_color() for ax in fig.axes if ax.get_title()}
    assert len(titles) == 3
    wrong = [t for t in titles if t.startswith("true: b\npred: a")]
    assert wrong and titles[wrong[0]] == "red"
    plt.close(fig)
