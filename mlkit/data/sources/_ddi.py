"""DDI (Diverse Dermatology Images): biopsy-proven lesions, balanced skin tones.

DDI gives skin tone only as a pair of Fitzpatrick types (12, 34, 56), so the
exact type stays unknown and only ``fitzpatrick_group`` is filled. The real
file starts with an unnamed index column, which is ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlkit.data.sources._common import (
    Sieve,
    SourceData,
    SourceOptions,
    posix_join,
    read_metadata,
    result,
    to_mask,
)
from mlkit.data.sources._csv import check_unique

log = logging.getLogger(__name__)

DATASET = "ddi"

_SKIN_TONE_GROUPS = {"12": "I-II", "34": "III-IV", "56": "V-VI"}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


class DdiOptions(SourceOptions):
    csv: str = "ddi_metadata.csv"
    #: Folder of the images inside the source folder; images keep DDI_file's name.
    image_dir: str = "images"


def read(data_root: Path, options: DdiOptions) -> SourceData:
    """Standard rows of DDI; ``raw_label`` is its ``disease``."""
    rows = read_metadata(
        data_root, DATASET, options, ["DDI_file", "skin_tone", "malignant", "disease"]
    )
    frame = rows.frame
    check_unique(rows, "DDI_file")

    image_id = frame["DDI_file"]
    sample_id = f"{DATASET}:" + image_id
    sieve = Sieve.from_rows(DATASET, rows, sample_id)
    sieve.quarantine(image_id.isna(), "missing_image_id", "column 'DDI_file' is empty")
    sieve.quarantine(
        frame["disease"].isna(), "missing_label", "column 'disease' is empty"
    )

    skin_tone = frame["skin_tone"]
    group = skin_tone.map(_SKIN_TONE_GROUPS)
    sieve.quarantine(
        to_mask(skin_tone.notna() & group.isna()),
        "invalid_value",
        "column 'skin_tone' must be 12, 34 or 56",
        values=skin_tone,
    )
    malignant_text = frame["malignant"]
    malignant = malignant_text.str.lower().map(_BOOLEANS).astype("boolean")
    sieve.quarantine(
        to_mask(malignant_text.notna() & malignant.isna()),
        "invalid_value",
        "column 'malignant' must be True or False",
        values=malignant_text,
    )

    image_dir = posix_join(options.folder(DATASET), options.image_dir)
    return result(
        DATASET,
        {
            "sample_id": sample_id,
            "dataset": DATASET,
            "image_id": image_id,
            "image_path": f"{image_dir}/" + image_id,
            "raw_label": frame["disease"],
            "text": "",
            "fitzpatrick_group": group,
            "malignant": malignant,
        },
        sieve,
        [rows.path],
    )
