import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mlkit.evaluate import plots  # noqa: E402
from mlkit.evaluate.report import evaluation_report  # noqa: E402


@pytest.fixture
def report():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    probs[np.arange(60), y_true] += 1
    probs /= probs.sum(axis=1, keepdims=True)
    groups = np.array(["I-II", "III-IV", "V-VI", None] * 15, dtype=object)
    return evaluation_report(
        y_true,
        probs,
        ["a", "b", "c"],
        model_sha256="0" * 64,
        manifest_sha256="1" * 64,
        synthetic=True,
        fitzpatrick_group=groups,
        dataset=np.array(["isic", "ddi"] * 30, dtype=object),
        ablations={"image_only": probs},
    )


def test_tables(report):
    assert plots.metrics_table(report).loc["test rows", "value"] == 60
    groups = plots.group_table(report, "fitzpatrick_group")
    assert list(groups.index) == ["I-II", "III-IV", "V-VI", "unknown"]
    assert groups["n"].sum() == 60
    assert list(plots.group_table(report, "dataset").index) == ["ddi", "isic"]
    ablations = plots.ablation_table(report)
    assert ablations.loc["image_only", "macro_f1"] == report["metrics"]["macro_f1"]


def test_plots_carry_the_synthetic_label(report):
    for fig in (
        plots.plot_confusion(report),
        plots.plot_groups(report),
        plots.plot_reliability(report),
    ):
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles and titles[0].endswith("(synthetic data)")
    confusion = plots.plot_confusion(report).axes[0]
    assert sum(int(t.get_text()) for t in confusion.texts) == 60
    plt.close("all")
