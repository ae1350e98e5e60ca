"""The standard row schema that every dataset reader produces.

One row is one image. Readers fill what their source has; ``conform`` adds the
missing optional columns as nulls, orders the columns and fixes the dtypes, so
frames from different sources concatenate cleanly.
"""

from __future__ import annotations

import pandas as pd

from mlkit.errors import DataError

STRING = pd.StringDtype("pyarrow")

#: Datasets that contribute rows (images) to the manifest.
DATASETS: tuple[str, ...] = ("fitzpatrick17k", "ddi", "isic", "derm1m", "scin")
#: Sources that add information (captions) to rows of other datasets.
AUGMENTERS: tuple[str, ...] = ("skincap",)
SOURCES: tuple[str, ...] = DATASETS + AUGMENTERS

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Column name -> pandas dtype, in manifest order.
COLUMNS: dict[str, object] = {
    "sample_id": STRING,  # "<dataset>:<image_id>", unique across the manifest
    "dataset": STRING,
    "image_id": STRING,  # the source's own identifier of the image
    "image_path": STRING,  # relative to the data root, POSIX separators
    "raw_label": STRING,  # as spelled in the source
    "label": STRING,  # canonical label after harmonization
    "text": STRING,  # description after the leakage filter; "" when none
    "text_unfiltered": STRING,  # the description before the leakage filter
    "fitzpatrick": "Int8",  # 1-6, null when unknown or only a range is known
    "fitzpatrick_group": STRING,  # "I-II", "III-IV", "V-VI" or null
    "group_id": STRING,  # patient / lesion / case; null when the source has none
    "split": STRING,  # train / val / test, null before splitting
    "sex": STRING,
    "age": "Float32",
    "body_site": STRING,
    "malignant": "boolean",
    "source_detail": STRING,  # e.g. Derm1M's origin (pubmed, youtube) or image type
}

#: Columns a reader must always provide.
REQUIRED: tuple[str, ...] = (
    "sample_id",
    "dataset",
    "image_id",
    "image_path",
    "raw_label",
)

QUARANTINE_COLUMNS: dict[str, object] = {
    "dataset": STRING,
    "source_file": STRING,
    "line": "Int64",  # 1-based line in the source file (header is line 1); null if n/a
    "sample_id": STRING,
    "reason": STRING,  # a stable code, e.g. "missing_image", "malformed_row"
    "detail": STRING,
}

FITZPATRICK_GROUPS: dict[int, str] = {
    1: "I-II",
    2: "I-II",
    3: "III-IV",
    4: "III-IV",
    5: "V-VI",
    6: "V-VI",
}


def fitzpatrick_group(types: pd.Series) -> pd.Series:
    """Map Fitzpatrick types 1-6 to the three groups used in evaluation."""
    return types.map(FITZPATRICK_GROUPS).astype(STRING)


def conform(frame: pd.DataFrame, *, extra: bool = False) -> pd.DataFrame:
    """Return ``frame`` with the standard columns, in order, with standard dtypes.

    Missing optional columns are added as nulls; ``text`` nulls become "".
    Columns outside the schema are dropped unless ``extra`` is true, in which
    case they follow the standard ones.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            "frame lacks required columns",
            expected=", ".join(REQUIRED),
            got=f"missing {', '.join(missing)}",
        )
    out = pd.DataFrame(index=frame.index)
    for column, dtype in COLUMNS.items():
        if column in frame.columns:
            out[column] = frame[column].astype(dtype)
        else:
            out[column] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    out["text"] = out["text"].fillna("")
    if extra:
        for column in frame.columns:
            if column not in COLUMNS:
                out[column] = frame[column]
    return out.reset_index(drop=True)


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in QUARANTINE_COLUMNS.items()})


def conform_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    """Standard quarantine columns and dtypes; missing ones become null."""
    out = pd.DataFrame(index=frame.index)
    for column, dtype in QUARANTINE_COLUMNS.items():
        if column in frame.columns:
            out[column] = frame[column].astype(dtype)
        else:
            out[column] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    return out.reset_index(drop=True)
