"""SkinCap: English captions for images of Fitzpatrick17k and DDI.

SkinCap is not a dataset of its own: its captions are added to the ``text`` of
rows that the Fitzpatrick17k and DDI readers made, matched on the dataset and
the image's file name (without extension, so a different image suffix still
matches). A caption already in a row's text is not added again, so applying
SkinCap twice gives the same frame as applying it once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mlkit.data.sources._common import (
    STRING,
    SourceOptions,
    as_sentence,
    read_metadata,
    to_mask,
)
from mlkit.data.sources._csv import check_unique
from mlkit.errors import DataError

log = logging.getLogger(__name__)

DATASET = "skincap"

#: SkinCap's ``source`` values -> the dataset whose rows get the caption.
_SOURCES = {
    "fitzpatrick17k": "fitzpatrick17k",
    "fitz17k": "fitzpatrick17k",
    "ddi": "ddi",
}
_CAPTION = "caption_zh_polish_en"


class SkincapOptions(SourceOptions):
    csv: str = "skincap.csv"


def apply(
    frame: pd.DataFrame, data_root: Path, options: SkincapOptions
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return a copy of ``frame`` with SkinCap captions added, and counts.

    Counts: ``matched`` rows that have a caption, of which ``appended`` got it
    now and ``already_present`` had it already; ``unmatched_captions`` are
    captions whose image is not in the frame (or whose source is not known).
    """
    missing = [c for c in ("dataset", "image_path", "text") if c not in frame.columns]
    if missing:
        raise DataError(
            "frame lacks the columns SkinCap needs",
            expected="dataset, image_path, text",
            got=f"missing {', '.join(missing)}",
        )
    rows = read_metadata(
        data_root, DATASET, options, ["ori_file_path", "source", _CAPTION]
    )
    captions = rows.frame
    dataset = captions["source"].str.lower().map(_SOURCES).astype(STRING)
    key = dataset + ":" + _stem(captions["ori_file_path"])
    check_unique(rows, "ori_file_path", key)
    caption = as_sentence(captions[_CAPTION])
    usable = to_mask(caption.notna() & key.notna())
    by_key = pd.Series(caption[usable].to_numpy(), index=key[usable].to_numpy())

    # Only rows of the captioned datasets are looked at: the frame may be the
    # whole manifest, with a million Derm1M rows.
    out = frame.copy()
    candidates = np.flatnonzero(to_mask(out["dataset"].isin(set(_SOURCES.values()))))
    subset = out.iloc[candidates]
    row_key = (subset["dataset"] + ":" + _stem(subset["image_path"])).to_numpy()
    found = pd.Series(row_key).map(by_key).to_numpy(dtype=object)
    texts = out["text"].fillna("").to_numpy(dtype=object)
    matched = appended = already = 0
    for pos, text in zip(candidates, found, strict=True):
        if pd.isna(text):  # no caption for this image
            continue
        matched += 1
        if text in texts[pos]:
            already += 1
            continue
        texts[pos] = f"{texts[pos]} {text}" if texts[pos] else text
        appended += 1
    out["text"] = pd.array(texts, dtype=out["text"].dtype)

    counts = {
        "matched": matched,
        "appended": appended,
        "already_present": already,
        "unmatched_captions": int(caption.notna().sum())
        - int(by_key.index.isin(row_key).sum()),
    }
    log.info("skincap: %s", counts)
    return out, counts


def _stem(paths: pd.Series) -> pd.Series:
    """File name without folder and extension: "images/000001.png" -> "000001"."""
    name = paths.str.replace("\\", "/", regex=False).str.rsplit("/", n=1).str[-1]
    return name.str.replace(r"\.[^.]*$", "", regex=True)
