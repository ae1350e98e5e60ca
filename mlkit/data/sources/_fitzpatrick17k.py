"""Fitzpatrick17k: clinical photos with a Fitzpatrick skin type per image.

Rows whose quality check says the label is wrong ("3 Wrongly labelled") are left
out by default. The source has no text; SkinCap adds captions to some images.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlkit.data import schema
from mlkit.data.sources._common import (
    Sieve,
    SourceData,
    SourceOptions,
    optional,
    parse_number,
    posix_join,
    read_metadata,
    result,
    to_mask,
)
from mlkit.data.sources._csv import check_unique

log = logging.getLogger(__name__)

DATASET = "fitzpatrick17k"

# "labelled" or "labeled", any case, e.g. "3 Wrongly labelled".
_WRONGLY_LABELLED = r"(?i)wrongly\s+label"


class Fitzpatrick17kOptions(SourceOptions):
    csv: str = "fitzpatrick17k.csv"
    #: Folder of the images inside the source folder.
    image_dir: str = "images"
    #: Images are named <md5hash><image_suffix>.
    image_suffix: str = ".jpg"
    #: Leave out rows whose ``qc`` column says the label is wrong.
    drop_wrongly_labelled: bool = True


def read(data_root: Path, options: Fitzpatrick17kOptions) -> SourceData:
    """Standard rows of Fitzpatrick17k; ``raw_label`` is its fine ``label``."""
    required = ["md5hash", "fitzpatrick_scale", "label"]
    if options.drop_wrongly_labelled:
        required.append("qc")
    rows = read_metadata(data_root, DATASET, options, required)
    frame = rows.frame
    check_unique(rows, "md5hash")

    image_id = frame["md5hash"]
    sample_id = f"{DATASET}:" + image_id
    sieve = Sieve.from_rows(DATASET, rows, sample_id)
    if options.drop_wrongly_labelled:
        wrong = frame["qc"].str.contains(_WRONGLY_LABELLED, regex=True)
        sieve.drop(wrong, "qc_wrongly_labelled")
    sieve.quarantine(image_id.isna(), "missing_image_id", "column 'md5hash' is empty")
    sieve.quarantine(frame["label"].isna(), "missing_label", "column 'label' is empty")

    # -1 means "not rated": unknown, not an error.
    scale = frame["fitzpatrick_scale"]
    numbers, unparseable = parse_number(scale)
    valid = to_mask(numbers.isin([-1, 1, 2, 3, 4, 5, 6]))
    sieve.quarantine(
        unparseable | (to_mask(numbers.notna()) & ~valid),
        "invalid_value",
        "column 'fitzpatrick_scale' must be 1-6, or -1 for unknown",
        values=scale,
    )
    fitzpatrick = numbers.where(numbers >= 1).astype("Int8")

    three = optional(frame, "three_partition_label")
    image_dir = posix_join(options.folder(DATASET), options.image_dir)
    return result(
        DATASET,
        {
            "sample_id": sample_id,
            "dataset": DATASET,
            "image_id": image_id,
            "image_path": f"{image_dir}/" + image_id + options.image_suffix,
            "raw_label": frame["label"],
            "text": "",
            "fitzpatrick": fitzpatrick,
            "fitzpatrick_group": schema.fitzpatrick_group(fitzpatrick),
            "malignant": three.str.lower() == "malignant",
            "source_detail": optional(frame, "nine_partition_label"),
        },
        sieve,
        [rows.path],
    )
