from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlkit.data.schema import STRING
from mlkit.data.split import assign_splits, check_splits, split_table
from mlkit.errors import ConfigError, DataError


def make_frame(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """Rows of (dataset, label, group_id); sample ids are numbered per dataset."""
    return pd.DataFrame(
        {
            "sample_id": [f"{d}:{i}" for i, (d, _, _) in enumerate(rows)],
            "dataset": [d for d, _, _ in rows],
            "label": [lab for _, lab, _ in rows],
            "group_id": pd.array([g for _, _, g in rows], dtype=STRING),
        }
    )


def random_frame(n: int, n_groups: int, n_labels: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    datasets = rng.choice(["isic", "scin", "derm1m"], n)
    groups = rng.integers(0, n_groups, n).astype(str)
    labels = rng.choice([f"label{i}" for i in range(n_labels)], n)
    frame = make_frame(list(zip(datasets, labels, groups, strict=True)))
    frame.loc[rng.random(n) < 0.2, "group_id"] = pd.NA
    return frame


def splits_per_group(frame: pd.DataFrame) -> pd.Series:
    grouped = frame.dropna(subset=["group_id"]).groupby(["dataset", "group_id"])
    return grouped["split"].nunique()


def test_groups_never_span_two_splits() -> None:
    frame = random_frame(3000, 300, 6, seed=1)

    out = assign_splits(frame, seed=7)

    assert (splits_per_group(out) == 1).all()
    assert set(out["split"]) == {"train", "val", "test"}
    check_splits(out)


def test_a_group_id_shared_by_two_datasets_is_two_groups() -> None:
    # Same group_id string, different datasets: not the same patient.
    rows = [("a", "x", "p1")] * 1 + [("b", "x", "p1")] * 1
    rows += [("a", "x", f"a{i}") for i in range(30)]
    rows += [("b", "x", f"b{i}") for i in range(30)]
    frame = make_frame(rows)

    splits = {
        seed: assign_splits(frame, seed=seed).set_index("sample_id")["split"]
        for seed in range(20)
    }

    # Over 20 seeds, "a/p1" and "b/p1" must land in different splits sometimes.
    assert any(s["a:0"] != s["b:1"] for s in splits.values())


def test_rows_without_group_id_are_split_individually() -> None:
    frame = make_frame([("a", "x", None)] * 100)

    out = assign_splits(frame)

    counts = out["split"].value_counts()
    assert counts["train"] == 70
    assert counts["val"] == 15
    assert counts["test"] == 15


def test_multi_label_group_stays_together_and_every_label_reaches_train() -> None:
    # "rare" appears only as the minority label of a group whose majority label
    # is "common", so it is stratified with "common" and may miss train first.
    rows = [("a", "common", f"p{i}") for i in range(40)]
    rows += [("a", "common", "p0"), ("a", "rare", "p0")]
    rows += [("a", "common", "p1"), ("a", "rare", "p1")]
    frame = make_frame(rows)

    for seed in range(30):
        out = assign_splits(frame, seed=seed)
        assert (splits_per_group(out) == 1).all()
        assert "rare" in set(out.loc[out["split"] == "train", "label"])
        check_splits(out)


def test_small_strata_fill_train_then_test_then_val() -> None:
    one = make_frame([("a", "x", "g1")] * 3)
    two = make_frame([("a", "x", "g1"), ("a", "x", "g2")])
    three = make_frame([("a", "x", "g1"), ("a", "x", "g2"), ("a", "x", "g3")])

    for seed in range(10):
        assert set(assign_splits(one, seed=seed)["split"]) == {"train"}
        assert sorted(assign_splits(two, seed=seed)["split"]) == ["test", "train"]
        assert sorted(assign_splits(three, seed=seed)["split"]) == [
            "test",
            "train",
            "val",
        ]


def test_zero_fractions_are_respected() -> None:
    frame = random_frame(500, 100, 3, seed=2)

    no_test = assign_splits(frame, fractions=(0.8, 0.2, 0.0))
    train_only = assign_splits(frame, fractions=(1.0, 0.0, 0.0))

    assert set(no_test["split"]) == {"train", "val"}
    assert set(train_only["split"]) == {"train"}


def test_deterministic_for_a_seed_and_varies_with_it() -> None:
    frame = random_frame(2000, 400, 5, seed=3)

    first = assign_splits(frame, seed=11)
    again = assign_splits(frame, seed=11)
    other = assign_splits(frame, seed=12)

    pd.testing.assert_series_equal(first["split"], again["split"])
    assert (first["split"] != other["split"]).any()


def test_independent_of_row_order_and_keeps_input_order() -> None:
    frame = random_frame(2000, 400, 5, seed=4)
    shuffled = frame.sample(frac=1.0, random_state=5)

    out = assign_splits(frame, seed=1)
    out_shuffled = assign_splits(shuffled, seed=1)

    # The result keeps the caller's row order and index ...
    assert out_shuffled.index.equals(shuffled.index)
    assert out_shuffled["sample_id"].tolist() == shuffled["sample_id"].tolist()
    # ... and each sample gets the same split whatever the order.
    left = out.set_index("sample_id")["split"]
    right = out_shuffled.set_index("sample_id")["split"].reindex(left.index)
    pd.testing.assert_series_equal(left, right)


def test_empty_frame_gets_an_empty_split_column() -> None:
    frame = make_frame([("a", "x", None)]).iloc[:0]

    out = assign_splits(frame)

    assert out.empty
    assert out["split"].dtype == STRING


def test_does_not_modify_the_input() -> None:
    frame = random_frame(100, 30, 3, seed=6)
    before = frame.copy()

    out = assign_splits(frame)

    pd.testing.assert_frame_equal(frame, before)
    assert "split" not in frame.columns
    assert out["split"].dtype == STRING


def test_label_shares_are_close_to_fractions_in_every_dataset() -> None:
    frame = random_frame(30_000, 6000, 4, seed=8)

    out = assign_splits(frame, fractions=(0.6, 0.2, 0.2), seed=2)

    table = split_table(out)
    for split, target in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        share = table[split] / table["total"]
        assert share.between(target - 0.03, target + 0.03).all(), (split, share)


@pytest.mark.parametrize(
    "fractions",
    [
        (0.7, 0.3),
        (0.7, 0.2, 0.2),
        (0.0, 0.5, 0.5),
        (1.2, -0.1, -0.1),
        (float("nan"), 0.5, 0.5),
        (True, 0.0, 0.0),
        "0.7",
    ],
)
def test_bad_fractions_raise_config_error_naming_fractions(fractions: object) -> None:
    frame = make_frame([("a", "x", None)])

    with pytest.raises(ConfigError, match="fractions"):
        assign_splits(frame, fractions=fractions)  # type: ignore[arg-type]


def test_fractions_may_sum_to_one_within_rounding() -> None:
    frame = make_frame([("a", "x", None)] * 10)

    out = assign_splits(frame, fractions=(0.1 + 0.2, 0.3, 0.4 - 1e-7))

    assert out["split"].notna().all()


def test_null_label_raises_data_error_naming_the_column() -> None:
    frame = make_frame([("a", "x", None), ("a", None, None)])

    with pytest.raises(DataError, match="'label'") as info:
        assign_splits(frame)
    assert info.value.column == "label"


def test_missing_column_raises_data_error() -> None:
    frame = make_frame([("a", "x", None)]).drop(columns=["group_id"])

    with pytest.raises(DataError, match="group_id"):
        assign_splits(frame)


def test_split_table_counts_per_dataset_and_label() -> None:
    frame = make_frame([("a", "x", None)] * 3 + [("b", "y", None)] * 2)
    frame["split"] = ["train", "train", "test", "val", "train"]

    table = split_table(frame)

    assert table.columns.tolist() == [
        "dataset",
        "label",
        "train",
        "val",
        "test",
        "total",
    ]
    assert table.to_dict("records") == [
        {"dataset": "a", "label": "x", "train": 2, "val": 0, "test": 1, "total": 3},
        {"dataset": "b", "label": "y", "train": 1, "val": 1, "test": 0, "total": 2},
    ]


def test_check_splits_catches_a_group_in_two_splits() -> None:
    frame = make_frame([("a", "x", "p1"), ("a", "x", "p1"), ("a", "x", "p2")])
    frame["split"] = ["train", "test", "train"]

    with pytest.raises(DataError, match="a/p1"):
        check_splits(frame)


def test_check_splits_catches_a_label_missing_from_train() -> None:
    frame = make_frame([("a", "x", None), ("a", "y", None)])
    frame["split"] = ["train", "test"]

    with pytest.raises(DataError, match="'y'|y$"):
        check_splits(frame)


@pytest.mark.parametrize("bad", ["holdout", None])
def test_check_splits_and_split_table_reject_unknown_split_values(
    bad: str | None,
) -> None:
    frame = make_frame([("a", "x", None), ("a", "x", None)])
    frame["split"] = pd.array(["train", bad], dtype=STRING)

    with pytest.raises(DataError, match="unknown split"):
        check_splits(frame)
    with pytest.raises(DataError, match="unknown split"):
        split_table(frame)


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["x", "y", "z", "w"]),
        st.one_of(st.none(), st.sampled_from([f"g{i}" for i in range(8)])),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=rows_strategy,
    seed=st.integers(0, 2**31),
    fractions=st.sampled_from([(0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (0.2, 0.3, 0.5)]),
)
def test_property_groups_never_straddle_and_every_label_is_in_train(
    rows: list[tuple[str, str, str | None]],
    seed: int,
    fractions: tuple[float, float, float],
) -> None:
    frame = make_frame(rows)

    out = assign_splits(frame, fractions=fractions, seed=seed)

    assert (splits_per_group(out) == 1).all()
    assert set(out["label"]) <= set(out.loc[out["split"] == "train", "label"])
    if fractions[2] == 0:
        assert "test" not in set(out["split"])
    check_splits(out)


@settings(max_examples=30, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 2**31), permutation_seed=st.integers())
def test_property_row_order_does_not_matter(
    rows: list[tuple[str, str, str | None]], seed: int, permutation_seed: int
) -> None:
    frame = make_frame(rows)
    shuffled = frame.sample(frac=1.0, random_state=permutation_seed % 2**32)

    left = assign_splits(frame, seed=seed).set_index("sample_id")["split"]
    right = assign_splits(shuffled, seed=seed).set_index("sample_id")["split"]

    pd.testing.assert_series_equal(left, right.reindex(left.index))
