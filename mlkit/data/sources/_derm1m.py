"""Derm1M: about a million image-text pairs from the web and the literature.

The label is the last level of ``hierarchical_disease_label``; the origin
(pubmed, youtube, ...) is the first folder of ``filename``. Rows whose text
mentions dermoscopy are left out: the model is for clinical photos. Everything
here works on whole columns (pyarrow kernels); there is no loop over rows.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
from pydantic import field_validator

from mlkit.data.sources._common import (
    Sieve,
    SourceData,
    SourceOptions,
    age_words,
    arrow,
    as_sentence,
    compose,
    in_blocks,
    join_present,
    matches,
    merge,
    optional,
    parse_age,
    per_value,
    posix_join,
    read_metadata,
    result,
    sentence,
    text_series,
    wrap,
)
from mlkit.data.sources._csv import CsvRows, check_unique

log = logging.getLogger(__name__)

DATASET = "derm1m"

_DERMOSCOPY = "dermoscop|dermatoscop"


class Derm1mOptions(SourceOptions):
    csv: str = "Derm1M.csv"
    #: Folder of the images inside the source folder; ``filename`` is relative
    #: to it.
    image_dir: str = ""
    #: What joins the levels of ``hierarchical_disease_label``.
    label_separator: str = ">"
    #: Leave out rows whose caption or symptoms mention dermoscopy.
    drop_dermoscopy: bool = True

    @field_validator("label_separator")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("label_separator must not be blank")
        return value


def read(data_root: Path, options: Derm1mOptions) -> SourceData:
    """Standard rows of Derm1M, with the caption and patient details as text."""
    rows = read_metadata(
        data_root,
        DATASET,
        options,
        ["filename", "hierarchical_disease_label", "caption"],
    )
    check_unique(rows, "filename", _clean_filename(rows.frame["filename"]))
    # Every step below is row by row, so blocks of rows run on all cores.
    parts = in_blocks(rows, lambda block: _standardize(block, options))
    return merge(DATASET, parts, [rows.path])


def _standardize(rows: CsvRows, options: Derm1mOptions) -> SourceData:
    frame = rows.frame
    filename = _clean_filename(frame["filename"])
    sample_id = f"{DATASET}:" + filename
    sieve = Sieve.from_rows(DATASET, rows, sample_id)
    caption = frame["caption"]
    symptoms = optional(frame, "symptoms")
    if options.drop_dermoscopy:
        mentions = matches(caption, _DERMOSCOPY, ignore_case=True) | matches(
            symptoms, _DERMOSCOPY, ignore_case=True
        )
        sieve.drop(mentions, "mentions_dermoscopy")
    sieve.quarantine(filename.isna(), "missing_image_id", "column 'filename' is empty")
    # Few distinct hierarchies over many rows: work on the distinct values.
    raw_label = per_value(
        frame["hierarchical_disease_label"],
        lambda labels: _last_level(labels, options.label_separator),
    )
    sieve.quarantine(
        raw_label.isna(),
        "missing_label",
        "column 'hierarchical_disease_label' has no label",
    )
    age_text = optional(frame, "age")
    age, bad_age = parse_age(age_text)
    sieve.quarantine(
        bad_age,
        "invalid_value",
        "column 'age' must be an age in years",
        values=age_text,
    )

    # Text is only built for the rows that stay: it is the costliest step.
    keep = sieve.keep
    gender = optional(frame, "gender")[keep]
    site = optional(frame, "body_location")[keep]
    years = wrap(age_words(age_text[keep]), suffix=" years old")
    text = compose(
        [
            as_sentence(caption[keep]),
            sentence("Patient: ", join_present([gender, years], ", ")),
            sentence("Site: ", site),
            sentence("Symptoms: ", symptoms[keep]),
        ]
    )

    image_dir = posix_join(options.folder(DATASET), options.image_dir)
    return result(
        DATASET,
        {
            "sample_id": sample_id,
            "dataset": DATASET,
            "image_id": filename,
            "image_path": f"{image_dir}/" + filename,
            "raw_label": raw_label,
            "text": text,
            "sex": gender,
            "age": age,
            "body_site": site,
            "source_detail": _origin(filename),
        },
        sieve,
        [rows.path],
        announce=False,
    )


def _clean_filename(values: pd.Series) -> pd.Series:
    """POSIX separators and no leading "/", so the path stays under the folder."""
    posix = pc.replace_substring(arrow(values), "\\", "/")
    return text_series(pc.utf8_ltrim(posix, characters="/"))


def _last_level(labels: pd.Series, separator: str) -> pd.Series:
    """The last non-empty level: "inflammatory>eczema>nummular eczema" -> the
    last one. Trailing separators ("a>b>") are ignored; all-empty -> null."""
    sep = re.escape(separator)
    text = pc.replace_substring_regex(arrow(labels), rf"(?:\s*{sep}\s*)+$", "")
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, rf"^.*{sep}", ""))
    last = text_series(text)
    return last.where(last != "")


def _origin(filename: pd.Series) -> pd.Series:
    """The first folder of the file name ("pubmed/abc.png" -> "pubmed")."""
    found = pc.extract_regex(arrow(filename), r"^(?P<origin>[^/]+)/")
    return text_series(pc.struct_field(found, [0]))
