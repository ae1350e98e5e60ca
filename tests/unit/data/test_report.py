import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mlkit.data import report  # noqa: E402
from mlkit.data.prepare import PrepareConfig, prepare  # noqa: E402


@pytest.fixture(scope="module")
def result(demo_data, tmp_path_factory):
    root, _ = demo_data
    out = tmp_path_factory.mktemp("report")
    return prepare(PrepareConfig(data_root=root, out_dir=out, image_check="header"))


def test_label_counts_sum_to_the_manifest(result):
    table = report.label_counts(result)
    assert table["rows_in_manifest"].sum() == len(result.manifest)
    assert (table["rows_read"] >= table["rows_in_manifest"]).all()
    # Every demo label absorbs several source spellings.
    assert (table["raw_spellings"] >= 2).all()
    assert table["rows_in_manifest"].is_monotonic_decreasing


def test_quarantine_and_dropped_tables(result):
    q = report.quarantine_summary(result.quarantine)
    assert q["rows"].sum() == len(result.quarantine)
    assert list(q.columns) == ["dataset", "reason", "rows"]
    empty = report.quarantine_summary(result.quarantine.iloc[:0])
    assert empty.empty and list(empty.columns) == ["dataset", "reason", "rows"]
    dropped = report.dropped_table({"isic": {"dermoscopic_image": 3}, "ddi": {}})
    assert dropped.to_dict(orient="records") == [
        {"dataset": "isic", "rule": "dermoscopic_image", "rows": 3}
    ]


def test_split_and_fitzpatrick_tables(result):
    by_dataset = report.split_by_dataset(result.manifest)
    assert list(by_dataset.columns) == ["train", "val", "test", "total"]
    assert by_dataset.loc["total", "total"] == len(result.manifest)
    shares = report.fitzpatrick_by_split(result.manifest, normalize=True)
    assert shares.sum().round(6).eq(1).all()
    counts = report.fitzpatrick_by_split(result.manifest)
    assert counts.to_numpy().sum() == len(result.manifest)
    assert list(counts.index) == [
        g for g in report.FITZPATRICK_ORDER if g in counts.index
    ]


def test_plots_label_synthetic_data(result):
    ax = report.plot_label_counts(report.label_counts(result), synthetic=True)
    assert ax.get_title().endswith("(synthetic data)")
    ax = report.plot_fitzpatrick_by_split(result.manifest)
    assert "synthetic" not in ax.get_title()
    assert len(ax.patches) >= 3
    plt.close("all")


def test_fitzpatrick_table_handles_missing_groups():
    manifest = pd.DataFrame(
        {"fitzpatrick_group": ["I-II", None], "split": ["train", "test"]}
    )
    table = report.fitzpatrick_by_split(manifest)
    assert table.loc["unknown", "test"] == 1 and table.loc["I-II", "train"] == 1
