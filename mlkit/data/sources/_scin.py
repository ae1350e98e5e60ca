"""SCIN: crowd-sourced phone photos, one case (up to three images) per person.

Cases (``scin_cases.csv``) hold the person's answers and the image paths; the
dermatologists' labels are in ``scin_labels.csv``, joined on ``case_id``. The
label is the condition with the highest weight; a tie goes to the condition
the dermatologists listed first. Each image becomes one row, grouped by case.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mlkit.data import schema
from mlkit.data.sources._common import (
    STRING,
    Sieve,
    SourceData,
    SourceOptions,
    compose,
    join_present,
    optional,
    posix_join,
    read_metadata,
    result,
    sentence,
    to_mask,
)
from mlkit.data.sources._csv import check_unique

log = logging.getLogger(__name__)

DATASET = "scin"

_IMAGE_COLUMNS = ("image_1_path", "image_2_path", "image_3_path")
_WEIGHTS = "weighted_skin_condition_label"
_ORDER = "dermatologist_skin_condition_on_label_name"
# Answers that mean "not known"; they are left out of the text.
_UNKNOWN = {"AGE_UNKNOWN", "UNKNOWN", "NONE_SELECTED", "NONE_IDENTIFIED"}
# A symptom column that says there were none; it adds nothing to the text.
_NO_SYMPTOMS = "condition_symptoms_no_relevant_experience"


class ScinOptions(SourceOptions):
    cases_csv: str = "scin_cases.csv"
    labels_csv: str = "scin_labels.csv"
    #: Folder that the ``image_N_path`` values are relative to, inside the
    #: source folder.
    image_dir: str = ""


def read(data_root: Path, options: ScinOptions) -> SourceData:
    """Standard rows of SCIN, one per image, with the case's answers as text."""
    cases = read_metadata(
        data_root, DATASET, options, ["case_id", "image_1_path"], "cases_csv"
    )
    labels = read_metadata(
        data_root, DATASET, options, ["case_id", _WEIGHTS], "labels_csv"
    )
    check_unique(cases, "case_id")
    check_unique(labels, "case_id")
    frame = cases.frame

    # Case-level problems: no id to join the labels on, or no image at all.
    case_sieve = Sieve.from_rows(
        DATASET, cases, pd.Series(pd.NA, index=frame.index, dtype=STRING)
    )
    case_sieve.quarantine(
        frame["case_id"].isna(), "invalid_value", "column 'case_id' is empty"
    )
    image_columns = [c for c in _IMAGE_COLUMNS if c in frame.columns]
    no_image = np.logical_and.reduce([to_mask(frame[c].isna()) for c in image_columns])
    case_sieve.quarantine(
        no_image, "missing_image_id", f"columns {', '.join(image_columns)} are empty"
    )

    # One row per image, in case order, then image order.
    case_pos, image_id = _images(frame, image_columns, case_sieve.keep)
    check_unique(cases, "image_N_path", image_id)
    case_id = frame["case_id"].take(case_pos).reset_index(drop=True)
    sample_id = f"{DATASET}:" + image_id
    sieve = Sieve(DATASET, cases.source_file, cases.lines[case_pos], sample_id)
    sieve.add(case_sieve.quarantined())

    # Labels, parsed once per distinct value.
    label_pos = case_id.map(
        pd.Series(np.arange(len(labels.frame)), index=labels.frame["case_id"])
    )
    has_labels = to_mask(label_pos.notna())
    label_pos_int = label_pos.fillna(0).astype("int64").to_numpy()
    weights = labels.frame[_WEIGHTS].take(label_pos_int).reset_index(drop=True)
    order = optional(labels.frame, _ORDER).take(label_pos_int).reset_index(drop=True)
    weights = weights.where(has_labels)
    raw_label, status = _top_conditions(weights, order)
    label_lines = pd.Series(labels.lines[label_pos_int]).where(has_labels)
    sieve.quarantine(
        ~has_labels,
        "missing_label",
        f"case has no row in {labels.source_file}",
    )
    sieve.quarantine(
        status == "invalid",
        "invalid_value",
        f"column {_WEIGHTS!r} must be a dict of condition -> weight",
        values=weights,
        source_file=labels.source_file,
        lines=label_lines,
    )
    sieve.quarantine(
        status == "missing",
        "missing_label",
        f"column {_WEIGHTS!r} names no condition",
        source_file=labels.source_file,
        lines=label_lines,
    )

    fst = optional(frame, "fitzpatrick_skin_type")
    fitzpatrick = fst.str.extract(r"^FST([1-6])$", expand=False).astype("Int8")
    unknown_fst = to_mask(fst.str.upper().str.startswith("NONE"))
    bad_fst = to_mask(fst.notna()) & to_mask(fitzpatrick.isna()) & ~unknown_fst
    sieve.quarantine(
        bad_fst[case_pos],
        "invalid_value",
        "column 'fitzpatrick_skin_type' must be FST1 to FST6",
        values=fst.take(case_pos),
    )
    fitzpatrick = fitzpatrick.take(case_pos).reset_index(drop=True)

    details = _case_details(frame)
    image_dir = posix_join(options.folder(DATASET), options.image_dir)
    return result(
        DATASET,
        {
            "sample_id": sample_id,
            "dataset": DATASET,
            "image_id": image_id,
            "image_path": f"{image_dir}/" + image_id,
            "raw_label": raw_label,
            "text": details["text"].take(case_pos).reset_index(drop=True),
            "fitzpatrick": fitzpatrick,
            "fitzpatrick_group": schema.fitzpatrick_group(fitzpatrick),
            "group_id": case_id,
            "sex": details["sex"].take(case_pos).reset_index(drop=True),
            "body_site": details["body_site"].take(case_pos).reset_index(drop=True),
        },
        sieve,
        [cases.path, labels.path],
    )


def _images(
    frame: pd.DataFrame, image_columns: list[str], keep: np.ndarray
) -> tuple[np.ndarray, pd.Series]:
    """Case position and image path of every image of the kept cases."""
    positions, paths = [], []
    for column in image_columns:
        present = to_mask(frame[column].notna()) & keep
        positions.append(np.flatnonzero(present))
        paths.append(frame[column][present])
    case_pos = np.concatenate(positions)
    image_id = pd.concat(paths, ignore_index=True)
    # Stable sort: a case's images stay in image_1, image_2, image_3 order.
    order = np.argsort(case_pos, kind="stable")
    return case_pos[order], image_id.take(order).reset_index(drop=True)


def _top_conditions(
    weights: pd.Series, order: pd.Series
) -> tuple[pd.Series, np.ndarray]:
    """Highest-weighted condition per row, and a status: ok, missing or invalid."""
    memo: dict[tuple[object, object], tuple[str | None, str]] = {}
    labels, statuses = [], []
    for pair in zip(weights.tolist(), order.tolist(), strict=True):
        if pair not in memo:
            memo[pair] = _top_condition(*pair)
        label, status = memo[pair]
        labels.append(label)
        statuses.append(status)
    return pd.Series(labels, dtype=STRING), np.asarray(statuses, dtype=object)


def _top_condition(weights: object, order: object) -> tuple[str | None, str]:
    """Parse one label cell, e.g. "{'Eczema': 0.67, 'Psoriasis': 0.33}".

    ``ast.literal_eval`` only accepts literals, so a cell can never run code.
    """
    if weights is None or weights is pd.NA:
        return None, "missing"
    parsed = _literal(weights)
    if not isinstance(parsed, dict) or not all(
        isinstance(name, str)
        and isinstance(weight, int | float)
        and not isinstance(weight, bool)
        for name, weight in parsed.items()
    ):
        return None, "invalid"
    parsed = {name.strip(): weight for name, weight in parsed.items() if name.strip()}
    if not parsed:
        return None, "missing"
    best = max(parsed.values())
    tied = [name for name, weight in parsed.items() if weight == best]
    listed = _literal(order) if isinstance(order, str) else None
    if isinstance(listed, list):
        for name in listed:
            if isinstance(name, str) and name.strip() in tied:
                return name.strip(), "ok"
    return tied[0], "ok"


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _answer_words(values: pd.Series) -> pd.Series:
    """A SCIN answer code as words: "ONE_TO_FOUR_WEEKS" -> "one to four weeks"."""
    known = values.where(~to_mask(values.str.upper().isin(_UNKNOWN)))
    return known.str.lower().str.replace("_", " ", regex=False)


def _age_words(values: pd.Series) -> pd.Series:
    """ "AGE_30_TO_39" -> "30 to 39 years old"; "AGE_80_OR_ABOVE" -> "80 years
    old or above"."""
    words = _answer_words(values.str.replace("^AGE_", "", regex=True))
    open_ended = words.str.extract(r"^(\d+) or above$", expand=False)
    return (open_ended + " years old or above").fillna(words + " years old")


def _flags(frame: pd.DataFrame, prefix: str, skip: tuple[str, ...] = ()) -> pd.Series:
    """Names of the YES columns starting with ``prefix``, joined by ", "."""
    columns = [c for c in frame.columns if c.startswith(prefix) and c not in skip]
    if not columns:
        return pd.Series(pd.NA, index=frame.index, dtype=STRING)
    parts = []
    for column in columns:
        name = column.removeprefix(prefix).replace("_", " ")
        yes = to_mask(frame[column].str.upper() == "YES")
        parts.append(pd.Series(np.where(yes, name, None), dtype=STRING))
    return join_present(parts, ", ")


def _case_details(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Sex, body site and the description of each case."""
    sex = _answer_words(optional(frame, "sex_at_birth")).reset_index(drop=True)
    age = _age_words(optional(frame, "age_group")).reset_index(drop=True)
    body_site = _flags(frame, "body_parts_")
    text = compose(
        [
            sentence("Patient: ", join_present([sex, age], ", ")),
            sentence("Texture: ", _flags(frame, "textures_")),
            sentence("Site: ", body_site),
            sentence(
                "Symptoms: ", _flags(frame, "condition_symptoms_", (_NO_SYMPTOMS,))
            ),
            sentence(
                "Duration: ",
                _answer_words(optional(frame, "condition_duration")).reset_index(
                    drop=True
                ),
            ),
        ]
    )
    return {"sex": sex, "body_site": body_site, "text": text}
