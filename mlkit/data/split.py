"""Group-aware, label-stratified train/val/test splits.

Images of one patient, lesion or case look alike, so a group that reached both
train and test would inflate every test metric. ``assign_splits`` therefore
assigns whole groups: the group key is ``(dataset, group_id)``, and a row
without a group_id is a group of its own. Within each dataset, groups are
stratified by label so that every split sees each label in roughly the
requested proportion, and every label reaches train.

The assignment is a pure function of the rows' values and the seed: row order
does not matter, and the same group of the same dataset draws the same random
key whatever other rows are present.
"""

from __future__ import annotations

import hashlib
import logging
import math
from numbers import Real

import numpy as np
import pandas as pd

from mlkit.data.schema import SPLITS, STRING
from mlkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TRAIN, VAL, TEST = 0, 1, 2


def assign_splits(
    frame: pd.DataFrame,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> pd.DataFrame:
    """Return a copy of ``frame`` whose ``split`` column says train, val or test.

    ``fractions`` are the target shares of rows for train, val and test. The
    rules, in order of precedence:

    - A group (same dataset and group_id; or a single row without group_id)
      never spans two splits.
    - Every label in the data has rows in train.
    - Within each (dataset, label) stratum the groups go to train, val and test
      so that the row shares are close to ``fractions``, as far as group sizes
      allow. A stratum with one group goes to train; with two, to train and
      test; with three or more, each split with a positive fraction gets at
      least one group.

    How it works: each group belongs to the stratum of its most frequent label
    (ties go to the alphabetically first). Groups of a stratum are put in a
    seeded random order and laid end to end by row count; a group goes to the
    split in which its midpoint falls. Then any label that has no train row
    (possible only for a label that is never a group's most frequent) gets one
    of its groups moved to train.

    Limitation: a group carrying several labels is stratified by its most
    frequent label only, so the split shares of the other labels are not
    controlled, and the repair pass that moves a group into train can take a
    label's only val or test group. With few or very unequal groups, the
    shares follow the group sizes rather than ``fractions``.

    Raises ConfigError for bad ``fractions`` and DataError when a needed column
    is absent or has nulls (group_id may be null).
    """
    shares = _check_fractions(fractions)
    _require(frame, ("sample_id", "dataset", "label", "group_id"))
    for column in ("sample_id", "dataset", "label"):
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise DataError(
                f"{nulls} rows have a null {column}",
                column=column,
                hint="splitting needs a value in every row; drop or fix them first",
            )

    if frame.empty:
        out = frame.copy()
        out["split"] = pd.Series(pd.NA, index=frame.index, dtype=STRING)
        return out

    dataset = frame["dataset"].astype(STRING)
    label = frame["label"].astype(STRING)
    # "g"/"s" keep a group_id from colliding with some other row's sample_id.
    member = ("g" + frame["group_id"].astype(STRING)).fillna(
        "s" + frame["sample_id"].astype(STRING)
    )
    group_key = dataset + "\x1f" + member

    # Sorted codes depend only on the values, never on the row order.
    gcode, gkeys = pd.factorize(group_key, sort=True)
    lcode, labels = pd.factorize(label, sort=True)
    dcode, _ = pd.factorize(dataset, sort=True)
    n_groups, n_labels = len(gkeys), len(labels)

    primary = _primary_label(gcode, lcode, n_groups, n_labels)
    size = np.bincount(gcode, minlength=n_groups)
    gdataset = np.empty(n_groups, dtype=np.int64)
    gdataset[gcode] = dcode
    rank_key = _random_keys(gkeys, seed)

    gsplit = _assign_groups(gdataset * n_labels + primary, size, rank_key, shares)
    moved = _repair_train(gsplit, gcode, lcode, n_labels, rank_key)

    row_split = gsplit[gcode]
    out = frame.copy()
    out["split"] = pd.Series(
        pd.Categorical.from_codes(row_split, categories=list(SPLITS)),
        index=frame.index,
    ).astype(STRING)

    counts = np.bincount(row_split, minlength=3)
    log.info(
        "assigned %s rows in %s groups: train %s, val %s, test %s "
        "(%s groups moved to train so that every label is there)",
        len(frame),
        n_groups,
        counts[TRAIN],
        counts[VAL],
        counts[TEST],
        moved,
    )
    return out


def split_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per dataset and label in each split, one line per (dataset, label).

    Columns: dataset, label, train, val, test, total. Rows with a null label are
    counted under a null label. Raises DataError if ``split`` holds anything but
    train, val and test.
    """
    _require(frame, ("dataset", "label", "split"))
    _check_split_values(frame["split"])

    counts = (
        frame.groupby(["dataset", "label", "split"], dropna=False, observed=True)
        .size()
        .unstack("split", fill_value=0)
        .reindex(columns=list(SPLITS), fill_value=0)
        .astype("int64")
    )
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts.reset_index().sort_values(["dataset", "label"], ignore_index=True)


def check_splits(frame: pd.DataFrame) -> None:
    """Raise DataError unless ``frame``'s splits are usable.

    Usable means: every split value is train, val or test (no nulls); no
    (dataset, group_id) has rows in two splits; every non-null label has rows
    in train.
    """
    _require(frame, ("dataset", "label", "group_id", "split"))
    _check_split_values(frame["split"])

    grouped = frame.dropna(subset=["group_id"])
    per_group = grouped.groupby(["dataset", "group_id"], observed=True)["split"]
    spread = per_group.nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        examples = ", ".join(f"{d}/{g}" for d, g in leaked.index[:5])
        raise DataError(
            f"{len(leaked)} groups have rows in more than one split",
            column="group_id",
            expected="each (dataset, group_id) in a single split",
            got=examples,
        )

    labels = set(frame["label"].dropna().unique())
    in_train = set(frame.loc[frame["split"] == "train", "label"].dropna().unique())
    absent = sorted(labels - in_train)
    if absent:
        raise DataError(
            f"{len(absent)} labels have no rows in train",
            column="label",
            expected="every label in train",
            got=", ".join(map(str, absent[:10])),
        )


def _check_fractions(fractions: object) -> tuple[float, float, float]:
    problem = None
    try:
        values = tuple(fractions)  # type: ignore[call-overload]
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
        for v in values
    ):
        problem = "must be three numbers (train, val, test)"
    elif any(v < 0 for v in values):
        problem = "must not be negative"
    elif abs(sum(values) - 1.0) > 1e-6:
        problem = "must sum to 1"
    elif values[0] <= 0:
        problem = "must give train a positive share"
    if problem is not None:
        raise ConfigError(f"fractions {problem}; got {fractions!r}")

    train, val, test = (float(v) for v in values)
    return train, val, test


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            "frame lacks columns needed for splitting",
            expected=", ".join(columns),
            got=f"missing {', '.join(missing)}",
        )


def _check_split_values(split: pd.Series) -> None:
    bad = split[~split.isin(SPLITS) | split.isna()]
    if len(bad):
        shown = sorted({"<null>" if pd.isna(v) else str(v) for v in bad.unique()})
        raise DataError(
            f"{len(bad)} rows have an unknown split",
            column="split",
            expected=", ".join(SPLITS),
            got=", ".join(shown[:10]),
        )


def _primary_label(
    gcode: np.ndarray, lcode: np.ndarray, n_groups: int, n_labels: int
) -> np.ndarray:
    """Each group's most frequent label code; ties go to the smallest code."""
    pairs, counts = np.unique(
        gcode.astype(np.int64) * n_labels + lcode, return_counts=True
    )
    pgroup, plabel = np.divmod(pairs, n_labels)
    order = np.lexsort((plabel, -counts, pgroup))
    pgroup, plabel = pgroup[order], plabel[order]
    first = np.r_[True, pgroup[1:] != pgroup[:-1]]
    primary = np.empty(n_groups, dtype=np.int64)
    primary[pgroup[first]] = plabel[first]
    return primary


def _random_keys(keys: pd.Index, seed: int) -> np.ndarray:
    """A seeded pseudo-random 64-bit key per group, computed from its key alone.

    Hashing (rather than drawing from a generator) keeps a group's key
    independent of which other groups are present.
    """
    hash_key = hashlib.blake2b(str(int(seed)).encode(), digest_size=8).hexdigest()
    return pd.util.hash_array(
        np.asarray(keys, dtype=object), hash_key=hash_key, categorize=False
    )


def _assign_groups(
    stratum: np.ndarray,
    size: np.ndarray,
    rank_key: np.ndarray,
    shares: tuple[float, float, float],
) -> np.ndarray:
    """Split code per group: groups laid end to end within each stratum."""
    n = len(stratum)
    order = np.lexsort((np.arange(n), rank_key, stratum))
    sorted_stratum, sz = stratum[order], size[order]
    starts = np.flatnonzero(np.r_[True, sorted_stratum[1:] != sorted_stratum[:-1]])
    sid = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    n_in = np.bincount(sid)

    # Where each group's midpoint falls in its stratum's row count, in [0, 1].
    end = np.cumsum(sz)
    before = end - sz - (end - sz)[starts][sid]
    total = np.bincount(sid, weights=sz)
    mid = (before + sz / 2) / total[sid]
    train, val, test = shares
    # With no test share, nothing may spill into test through rounding.
    val_end = train + val if test > 0 else math.inf
    split = np.where(mid < train, TRAIN, np.where(mid < val_end, VAL, TEST))

    # Small strata: make sure train, then test, then val get a group. Midpoints
    # grow along the order, so the splits run train -> val -> test and the
    # overrides below never take a split's last group.
    no_train = np.bincount(sid[split == TRAIN], minlength=len(starts)) == 0
    split[starts[no_train]] = TRAIN
    last = starts + n_in - 1
    wanted = [code for code, share in ((TEST, test), (VAL, val)) if share > 0]
    for k, code in enumerate(wanted):
        lacking = np.bincount(sid[split == code], minlength=len(starts)) == 0
        fix = lacking & (n_in >= k + 2)
        split[last[fix] - k] = code

    gsplit = np.empty(n, dtype=np.int64)
    gsplit[order] = split
    return gsplit


def _repair_train(
    gsplit: np.ndarray,
    gcode: np.ndarray,
    lcode: np.ndarray,
    n_labels: int,
    rank_key: np.ndarray,
) -> int:
    """Move one group per label that has no train row into train, in place.

    Moving a group into train never removes a label from train, so one pass
    suffices. Returns the number of groups moved.
    """
    in_train = np.zeros(n_labels, dtype=bool)
    in_train[lcode[gsplit[gcode] == TRAIN]] = True
    rows = np.flatnonzero(~in_train[lcode])
    if not len(rows):
        return 0
    cand_label, cand_group = lcode[rows], gcode[rows]
    order = np.lexsort((cand_group, rank_key[cand_group], cand_label))
    cand_label, cand_group = cand_label[order], cand_group[order]
    first = np.r_[True, cand_label[1:] != cand_label[:-1]]
    chosen = np.unique(cand_group[first])
    gsplit[chosen] = TRAIN
    return len(chosen)
