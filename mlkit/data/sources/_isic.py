"""ISIC archive metadata (2024 style): the clinical, non-dermoscopic images.

The model is for phone and camera photos, so dermoscopic images (and any other
image type not kept) are left out and counted. The diagnosis is hierarchical in
``diagnosis_1`` .. ``diagnosis_5``; the most specific non-empty level is the
label.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mlkit.data import schema
from mlkit.data.sources._common import (
    Sieve,
    SourceData,
    SourceOptions,
    age_words,
    compose,
    join_present,
    optional,
    parse_age,
    posix_join,
    read_metadata,
    result,
    sentence,
    to_mask,
    wrap,
)
from mlkit.data.sources._csv import check_unique

log = logging.getLogger(__name__)

DATASET = "isic"

_DIAGNOSIS_LEVELS = [f"diagnosis_{level}" for level in range(1, 6)]
# Some ISIC collections record the Fitzpatrick skin type, in Roman numerals.
_FITZPATRICK = {
    **{roman: i for i, roman in enumerate(["I", "II", "III", "IV", "V", "VI"], 1)},
    **{str(i): i for i in range(1, 7)},
}


class IsicOptions(SourceOptions):
    csv: str = "metadata.csv"
    #: Folder of the images inside the source folder.
    image_dir: str = "images"
    #: Images are named <isic_id><image_suffix>.
    image_suffix: str = ".jpg"
    #: Values of ``image_type`` to keep (compared ignoring case); others are
    #: dropped and counted as "dermoscopic_image" or "other_image_type".
    keep_image_types: tuple[str, ...] = (
        "clinical: close-up",
        "clinical: overview",
        "TBP tile: close-up",
    )


def read(data_root: Path, options: IsicOptions) -> SourceData:
    """Standard rows of ISIC; group_id is the patient (else the lesion)."""
    rows = read_metadata(
        data_root, DATASET, options, ["isic_id", "diagnosis_1", "image_type"]
    )
    frame = rows.frame
    check_unique(rows, "isic_id")

    image_id = frame["isic_id"]
    sample_id = f"{DATASET}:" + image_id
    sieve = Sieve.from_rows(DATASET, rows, sample_id)
    image_type = frame["image_type"]
    kind = image_type.str.lower()
    kept = to_mask(kind.isin([t.lower() for t in options.keep_image_types]))
    sieve.drop(to_mask(kind == "dermoscopic") & ~kept, "dermoscopic_image")
    sieve.drop(~kept, "other_image_type")
    sieve.quarantine(image_id.isna(), "missing_image_id", "column 'isic_id' is empty")

    # The most specific level that is filled in.
    raw_label = frame["diagnosis_1"]
    for level in _DIAGNOSIS_LEVELS[1:]:
        if level in frame.columns:
            raw_label = frame[level].fillna(raw_label)
    sieve.quarantine(
        raw_label.isna(),
        "missing_label",
        "columns 'diagnosis_1'..'diagnosis_5' are empty",
    )
    age_text = optional(frame, "age_approx")
    age, bad_age = parse_age(age_text)
    sieve.quarantine(
        bad_age,
        "invalid_value",
        "column 'age_approx' must be an age in years",
        values=age_text,
    )

    skin_type = optional(frame, "fitzpatrick_skin_type").str.strip().str.upper()
    fitzpatrick = skin_type.map(_FITZPATRICK).astype("Int8")
    sieve.quarantine(
        to_mask(skin_type.notna()) & to_mask(fitzpatrick.isna()),
        "invalid_value",
        "column 'fitzpatrick_skin_type' must be I to VI",
        values=skin_type,
    )

    sex = optional(frame, "sex")
    site = optional(frame, "anatom_site_general")
    about_age = wrap(age_words(age_text.where(~bad_age)), "about ", " years old")
    text = compose(
        [
            sentence("Patient: ", join_present([sex, about_age], ", ")),
            sentence("Site: ", site),
        ]
    )
    first_level = frame["diagnosis_1"].str.lower()
    malignant = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    malignant[to_mask(first_level == "malignant")] = True
    malignant[to_mask(first_level == "benign")] = False
    # Patient-level groups are stricter than lesion-level ones: no patient ends
    # up in two splits.
    group_id = optional(frame, "patient_id").fillna(optional(frame, "lesion_id"))

    image_dir = posix_join(options.folder(DATASET), options.image_dir)
    return result(
        DATASET,
        {
            "sample_id": sample_id,
            "dataset": DATASET,
            "image_id": image_id,
            "image_path": f"{image_dir}/" + image_id + options.image_suffix,
            "raw_label": raw_label,
            "text": text,
            "group_id": group_id,
            "fitzpatrick": fitzpatrick,
            "fitzpatrick_group": schema.fitzpatrick_group(fitzpatrick),
            "sex": sex,
            "age": age,
            "body_site": site,
            "malignant": malignant,
            "source_detail": image_type,
        },
        sieve,
        [rows.path],
    )
