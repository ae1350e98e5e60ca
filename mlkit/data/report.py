"""Tables and plots of a preprocessing run, for the notebook and the book."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mlkit.data.schema import SPLITS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mlkit.data.prepare import PrepareResult

FITZPATRICK_ORDER = ("I-II", "III-IV", "V-VI", "unknown")


def label_counts(result: PrepareResult) -> pd.DataFrame:
    """Rows per canonical label: before harmonization (summed over the raw
    spellings that map to it) and in the final manifest, with how many raw
    spellings each label absorbed."""
    std = result.standardized[["raw_label"]].copy()
    manifest = result.manifest
    spellings = (
        pd.DataFrame({"raw_label": manifest["raw_label"], "label": manifest["label"]})
        .drop_duplicates()
        .groupby("label", observed=True)
        .size()
        .rename("raw_spellings")
    )
    raw_to_label = (
        manifest[["raw_label", "label"]]
        .drop_duplicates("raw_label")
        .set_index("raw_label")
    )
    before = (
        std.join(raw_to_label, on="raw_label")
        .groupby("label", observed=True)
        .size()
        .rename("rows_read")
    )
    after = manifest.groupby("label", observed=True).size().rename("rows_in_manifest")
    table = pd.concat([spellings, before, after], axis=1).fillna(0).astype(int)
    return table.sort_values("rows_in_manifest", ascending=False).rename_axis("label")


def quarantine_summary(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Quarantined rows per dataset and reason."""
    if quarantine.empty:
        return pd.DataFrame(columns=["dataset", "reason", "rows"])
    return (
        quarantine.groupby(["dataset", "reason"], observed=True, dropna=False)
        .size()
        .rename("rows")
        .reset_index()
        .sort_values(["dataset", "rows"], ascending=[True, False], kind="stable")
        .reset_index(drop=True)
    )


def dropped_table(dropped: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Rows dropped by design (not errors), per dataset and rule."""
    rows = [
        {"dataset": dataset, "rule": rule, "rows": count}
        for dataset, rules in dropped.items()
        for rule, count in rules.items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "rule", "rows"])


def split_by_dataset(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows per dataset (rows) and split (columns), with totals."""
    table = pd.crosstab(
        manifest["dataset"], manifest["split"], margins=True, margins_name="total"
    )
    order = [s for s in SPLITS if s in table.columns] + ["total"]
    return table[order]


def fitzpatrick_by_split(
    manifest: pd.DataFrame, *, normalize: bool = False
) -> pd.DataFrame:
    """Rows per Fitzpatrick group (rows) and split (columns).

    With ``normalize`` each column sums to 1, which shows whether the skin-type
    mix is the same in train, val and test.
    """
    groups = manifest["fitzpatrick_group"].astype(object).fillna("unknown")
    table = pd.crosstab(
        groups, manifest["split"], normalize="columns" if normalize else False
    )
    rows = [g for g in FITZPATRICK_ORDER if g in table.index]
    cols = [s for s in SPLITS if s in table.columns]
    return table.loc[rows, cols]


def _title(text: str, synthetic: bool) -> str:
    return f"{text} (synthetic data)" if synthetic else text


def plot_fitzpatrick_by_split(
    manifest: pd.DataFrame, ax: Axes | None = None, *, synthetic: bool = False
) -> Axes:
    """Grouped bars: share of each Fitzpatrick group within each split."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    table = fitzpatrick_by_split(manifest, normalize=True)
    table.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("Fitzpatrick group")
    ax.set_ylabel("share of split")
    ax.set_title(_title("Skin-type mix per split", synthetic))
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_label_counts(
    table: pd.DataFrame,
    ax: Axes | None = None,
    *,
    top: int = 20,
    synthetic: bool = False,
) -> Axes:
    """Horizontal bars of rows per label, read vs kept in the manifest."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * min(top, len(table)))))
    table.head(top)[["rows_read", "rows_in_manifest"]].iloc[::-1].plot.barh(ax=ax)
    ax.set_xlabel("rows")
    ax.set_title(_title("Rows per canonical label", synthetic))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax
