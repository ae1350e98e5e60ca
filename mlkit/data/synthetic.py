"""Synthetic demo data in the file formats of the public dermatology datasets.

No real dataset can be downloaded everywhere mlkit runs (CI, a fresh laptop), so
the demo and the tests use data that this module draws: ten skin conditions as
small images whose look differs in learnable ways (shape, colour, texture), with
descriptions whose symptoms differ per condition, written as the metadata files
of Fitzpatrick17k, DDI, ISIC, Derm1M, SCIN and SkinCap, with their real column
names and label spellings. Faults of the kinds that real data has (unreadable and
truncated images, missing files, malformed rows, empty labels, invalid values,
dermoscopic images) are injected on purpose, and the summary lists every one of
them, so that tests can check that exactly those rows are quarantined or dropped.

The output is deterministic: the same configuration writes byte-identical files.
Nothing in it is real patient data; ``SYNTHETIC.md`` in the output says so.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
import string
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from mlkit._io import atomic_open
from mlkit.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "CONDITIONS",
    "FAULT_KINDS",
    "FAULT_OUTCOMES",
    "FaultRecord",
    "SynthConfig",
    "SynthSummary",
    "generate",
    "read_summary",
    "write_derm1m_csv",
]

#: The ten canonical conditions of the demo data (names as in the taxonomy).
CONDITIONS: tuple[str, ...] = (
    "melanoma",
    "melanocytic nevus",
    "psoriasis",
    "acne",
    "eczema",
    "basal cell carcinoma",
    "seborrheic keratosis",
    "vitiligo",
    "urticaria",
    "tinea",
)
MEL, NEV, PSO, ACN, ECZ, BCC, SEK, VIT, URT, TIN = range(len(CONDITIONS))

#: Injected fault kinds, in the order the summary lists them.
FAULT_KINDS: tuple[str, ...] = (
    "corrupt_image",
    "truncated_image",
    "missing_image",
    "malformed_row",
    "empty_label",
    "invalid_fitzpatrick",
    "wrongly_labelled",
    "dermoscopic_isic",
    "dermoscopy_mention",
)

#: What the data layer is expected to do with each fault: a quarantine reason
#: code, or "dropped" for rows that are filtered out and only counted.
FAULT_OUTCOMES: dict[str, str] = {
    "corrupt_image": "unreadable_image",
    "truncated_image": "truncated_image",
    "missing_image": "missing_image",
    "malformed_row": "malformed_row",
    "empty_label": "missing_label",
    "invalid_fitzpatrick": "invalid_value",
    "wrongly_labelled": "dropped",
    "dermoscopic_isic": "dropped",
    "dermoscopy_mention": "dropped",
}

_DATASETS: tuple[str, ...] = ("fitzpatrick17k", "ddi", "isic", "derm1m", "scin")
_DEFAULT_SHARES = {
    "fitzpatrick17k": 0.30,
    "isic": 0.25,
    "derm1m": 0.25,
    "ddi": 0.10,
    "scin": 0.10,
}
# Share of images written as PNG; the rest are JPEG. As in the real sources.
_DEFAULT_PNG_SHARE = {
    "fitzpatrick17k": 0.0,
    "isic": 0.0,
    "derm1m": 0.0,
    "ddi": 1.0,
    "scin": 1.0,
}
# These two name their images "<id>.jpg" in the data-root layout.
_JPEG_ONLY = ("fitzpatrick17k", "isic")

# Conditions each source holds. ISIC and DDI are mostly neoplasms, SCIN mostly
# inflammatory conditions; Fitzpatrick17k and Derm1M fill the balance.
_DATASET_CONDITIONS: dict[str, tuple[int, ...]] = {
    "fitzpatrick17k": tuple(range(len(CONDITIONS))),
    "ddi": (MEL, NEV, BCC, SEK, ECZ, ACN),
    "isic": (MEL, NEV, BCC, SEK),
    "derm1m": tuple(range(len(CONDITIONS))),
    "scin": (ECZ, PSO, ACN, URT, TIN, VIT),
}

# Where each fault kind is injected, in turn.
_FAULT_DATASETS: dict[str, tuple[str, ...]] = {
    "corrupt_image": ("fitzpatrick17k", "isic", "derm1m"),
    "truncated_image": ("isic", "derm1m", "fitzpatrick17k"),
    "missing_image": ("fitzpatrick17k", "ddi", "isic", "derm1m", "scin"),
    "malformed_row": ("derm1m", "fitzpatrick17k", "isic", "ddi"),
    "empty_label": ("fitzpatrick17k", "derm1m", "ddi", "isic"),
    "invalid_fitzpatrick": ("fitzpatrick17k", "ddi"),
    "wrongly_labelled": ("fitzpatrick17k",),
    "dermoscopic_isic": ("isic",),
    "dermoscopy_mention": ("derm1m",),
}

# --- label spellings, per source ---------------------------------------------

_FITZ_LABELS: dict[int, tuple[str, ...]] = {
    MEL: ("malignant melanoma", "superficial spreading melanoma ssm", "melanoma"),
    NEV: ("nevocytic nevus", "congenital nevus"),
    PSO: ("psoriasis", "pustular psoriasis"),
    ACN: ("acne vulgaris", "acne"),
    ECZ: ("eczema", "nummular eczema", "dyshidrotic eczema"),
    BCC: (
        "basal cell carcinoma",
        "basal cell carcinoma morpheiform",
        "solid cystic basal cell carcinoma",
    ),
    SEK: ("seborrheic keratosis",),
    VIT: ("vitiligo",),
    URT: ("urticaria",),
    TIN: ("tinea corporis", "tinea cruris"),
}
# (nine_partition_label, three_partition_label) as in Fitzpatrick17k.
_FITZ_PARTITIONS: dict[int, tuple[str, str]] = {
    MEL: ("malignant melanoma", "malignant"),
    NEV: ("benign melanocyte", "benign"),
    PSO: ("inflammatory", "non-neoplastic"),
    ACN: ("inflammatory", "non-neoplastic"),
    ECZ: ("inflammatory", "non-neoplastic"),
    BCC: ("malignant epidermal", "malignant"),
    SEK: ("benign epidermal", "benign"),
    VIT: ("inflammatory", "non-neoplastic"),
    URT: ("inflammatory", "non-neoplastic"),
    TIN: ("inflammatory", "non-neoplastic"),
}
_FITZ_QC = ("1 Diagnostic", "2 Characteristic", "4 Other")
_DDI_LABELS: dict[int, tuple[str, ...]] = {
    MEL: ("melanoma-in-situ", "nodular-melanoma-(nm)"),
    NEV: ("melanocytic-nevi", "dysplastic-nevus"),
    BCC: ("basal-cell-carcinoma-nodular",),
    SEK: ("seborrheic-keratosis-irritated",),
    ECZ: ("eczema-spongiotic-dermatitis",),
    ACN: ("acne-cystic",),
}
_MALIGNANT = frozenset({MEL, BCC})
# diagnosis_1, diagnosis_2 and the choices for diagnosis_3 (ISIC 2024 hierarchy).
_ISIC_DIAGNOSES: dict[int, tuple[str, str, tuple[str, ...]]] = {
    MEL: (
        "Malignant",
        "Malignant melanocytic proliferations (Melanoma)",
        ("Melanoma Invasive", "Melanoma in situ", "Melanoma, NOS"),
    ),
    NEV: ("Benign", "Benign melanocytic proliferations", ("Nevus",)),
    BCC: ("Malignant", "Malignant epidermal proliferations", ("Basal cell carcinoma",)),
    SEK: ("Benign", "Benign epidermal proliferations", ("Seborrheic keratosis",)),
}
_ISIC_IMAGE_TYPES = ("clinical: close-up", "clinical: overview", "TBP tile: close-up")
_DERM1M_LABELS: dict[int, tuple[str, ...]] = {
    MEL: (
        "neoplastic>malignant melanocytic>melanoma",
        "neoplastic>malignant melanocytic>melanoma>malignant melanoma",
    ),
    NEV: (
        "neoplastic>benign melanocytic>congenital nevus",
        "neoplastic>benign melanocytic>nevocytic nevus",
    ),
    PSO: (
        "inflammatory>papulosquamous>psoriasis",
        "inflammatory>papulosquamous>psoriasis>scalp psoriasis",
        "inflammatory>papulosquamous>psoriasis>pustular psoriasis",
    ),
    ACN: (
        "inflammatory>pilosebaceous>acne",
        "inflammatory>pilosebaceous>acne vulgaris",
    ),
    ECZ: (
        "inflammatory>eczema",
        "inflammatory>eczema>nummular eczema",
        "inflammatory>eczema>dyshidrotic eczema",
        "inflammatory>eczema>xerotic eczema",
    ),
    BCC: ("neoplastic>malignant epidermal>basal cell carcinoma",),
    SEK: (
        "neoplastic>benign epidermal>seborrheic keratosis",
        "neoplastic>benign epidermal>seborrheic keratoses",
    ),
    VIT: ("pigmentary>hypopigmentation>vitiligo",),
    URT: ("inflammatory>urticarial>urticaria", "inflammatory>urticarial>hives"),
    TIN: (
        "infectious>fungal>tinea",
        "infectious>fungal>tinea>tinea corporis",
        "infectious>fungal>tinea>tinea cruris",
    ),
}
_DERM1M_ORIGINS = ("IIYI", "pubmed", "youtube", "edu")
_SCIN_NAMES: dict[int, str] = {
    ECZ: "Eczema",
    PSO: "Psoriasis",
    ACN: "Acne",
    URT: "Urticaria",
    TIN: "Tinea",
    VIT: "Vitiligo",
}
# Lower-weighted differentials that SCIN dermatologists list next to the main one.
_SCIN_DIFFERENTIALS: dict[int, tuple[str, ...]] = {
    ECZ: ("Allergic Contact Dermatitis", "Irritant Contact Dermatitis"),
    PSO: ("Seborrheic Dermatitis", "Lichen planus", "Pityriasis rosea"),
    ACN: ("Folliculitis", "Rosacea", "Perioral Dermatitis"),
    URT: ("Insect Bite", "Drug Rash", "Erythema multiforme"),
    TIN: ("Granuloma annulare", "Pityriasis rosea", "Nummular Dermatitis"),
    VIT: ("Pityriasis alba", "Post-inflammatory hypopigmentation"),
}
_SCIN_SYMPTOMS = (
    "bothersome_appearance",
    "bleeding",
    "increasing_size",
    "darkening",
    "itching",
    "burning",
    "pain",
)
# Probability of each SCIN symptom (order of _SCIN_SYMPTOMS) per condition.
_SCIN_SYMPTOM_P = np.array(
    [
        [0.5, 0.5, 0.8, 0.7, 0.2, 0.05, 0.1],
        [0.3, 0.05, 0.1, 0.2, 0.05, 0.0, 0.0],
        [0.7, 0.2, 0.4, 0.1, 0.6, 0.2, 0.2],
        [0.8, 0.1, 0.2, 0.3, 0.2, 0.1, 0.6],
        [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.2],
        [0.4, 0.7, 0.7, 0.1, 0.1, 0.1, 0.2],
        [0.6, 0.1, 0.3, 0.5, 0.3, 0.0, 0.0],
        [0.8, 0.0, 0.6, 0.0, 0.05, 0.1, 0.0],
        [0.4, 0.0, 0.3, 0.0, 0.95, 0.5, 0.1],
        [0.4, 0.0, 0.7, 0.1, 0.8, 0.2, 0.05],
    ]
)
_SCIN_TEXTURES = ("raised_or_bumpy", "flat", "rough_or_flaky", "fluid_filled")
_SCIN_TEXTURE_P = np.array(
    [
        [0.5, 0.5, 0.1, 0.0],
        [0.4, 0.6, 0.0, 0.0],
        [0.6, 0.1, 0.9, 0.05],
        [0.9, 0.0, 0.1, 0.5],
        [0.3, 0.4, 0.8, 0.2],
        [0.8, 0.1, 0.2, 0.1],
        [0.8, 0.0, 0.7, 0.0],
        [0.0, 0.95, 0.0, 0.0],
        [0.9, 0.1, 0.0, 0.05],
        [0.5, 0.3, 0.8, 0.0],
    ]
)
_SCIN_BODY_PARTS = (
    "head_or_neck",
    "arm",
    "palm",
    "back_of_hand",
    "torso_front",
    "torso_back",
    "genitalia_or_groin",
    "buttocks",
    "leg",
    "foot_top_or_side",
    "foot_sole",
    "other",
)
_SCIN_AGE_GROUPS = (
    (29, "AGE_18_TO_29"),
    (39, "AGE_30_TO_39"),
    (49, "AGE_40_TO_49"),
    (59, "AGE_50_TO_59"),
    (69, "AGE_60_TO_69"),
    (79, "AGE_70_TO_79"),
    (200, "AGE_80_OR_ABOVE"),
)

# --- body sites, ages, durations ----------------------------------------------

# Canonical sites; each source spells them its own way.
_SITES = (
    "head_or_neck",
    "arm",
    "hand",
    "torso_front",
    "torso_back",
    "groin",
    "leg",
    "foot",
)
_SITE_PHRASES: tuple[tuple[str, ...], ...] = (
    ("face", "scalp", "neck", "forehead", "cheek"),
    ("forearm", "upper arm", "elbow"),
    ("back of the hand", "fingers"),
    ("chest", "abdomen"),
    ("back", "shoulder"),
    ("groin", "inner thigh"),
    ("thigh", "lower leg", "knee", "shin"),
    ("foot", "ankle"),
)
_SITE_ISIC = (
    "head/neck",
    "upper extremity",
    "upper extremity",
    "anterior torso",
    "posterior torso",
    "oral/genital",
    "lower extremity",
    "lower extremity",
)
_SITE_SCIN = (
    "head_or_neck",
    "arm",
    "back_of_hand",
    "torso_front",
    "torso_back",
    "genitalia_or_groin",
    "leg",
    "foot_top_or_side",
)
# Relative frequency of each site (order of _SITES) per condition.
_SITE_WEIGHTS = np.array(
    [
        [1.0, 1.0, 0.3, 1.0, 2.0, 0.1, 1.5, 0.3],
        [1.0, 1.0, 0.3, 1.5, 1.5, 0.2, 1.0, 0.3],
        [1.2, 1.5, 0.5, 0.8, 1.0, 0.3, 1.5, 0.3],
        [3.0, 0.2, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
        [1.0, 1.5, 2.0, 0.5, 0.5, 0.2, 1.0, 0.5],
        [4.0, 0.5, 0.3, 0.5, 0.5, 0.0, 0.3, 0.0],
        [1.0, 0.5, 0.2, 2.0, 2.5, 0.1, 0.5, 0.1],
        [2.0, 1.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5],
        [0.5, 1.5, 0.5, 2.0, 1.5, 0.3, 1.5, 0.3],
        [0.3, 1.0, 0.3, 1.0, 1.0, 2.5, 1.0, 1.5],
    ]
)
# Mean and spread of the patient's age per condition.
_AGES = np.array(
    [[58, 14], [30, 14], [42, 16], [19, 5], [25, 18], [66, 11], [62, 12], [32, 15]]
    + [[35, 15], [35, 18]],
    dtype=float,
)
_DURATIONS = (
    "for two days",
    "for a week",
    "for three weeks",
    "for two months",
    "for six months",
    "for a year",
    "for several years",
    "since childhood",
)
_DURATION_SCIN = (
    "ONE_TO_SEVEN_DAYS",
    "ONE_TO_SEVEN_DAYS",
    "ONE_TO_FOUR_WEEKS",
    "ONE_TO_THREE_MONTHS",
    "THREE_TO_TWELVE_MONTHS",
    "MORE_THAN_ONE_YEAR",
    "MORE_THAN_FIVE_YEARS",
    "MORE_THAN_FIVE_YEARS",
)
_DURATION_WEIGHTS = np.array(
    [
        [0, 0, 0.5, 2, 3, 2, 0.5, 0],
        [0, 0, 0, 0.3, 0.5, 1, 3, 2],
        [0, 0, 0.3, 1, 2, 2, 3, 0.2],
        [0, 0.2, 0.5, 2, 2, 1.5, 1, 0],
        [0.3, 0.5, 1, 1.5, 1.5, 1, 1.5, 1],
        [0, 0, 0.2, 1, 2.5, 2.5, 1, 0],
        [0, 0, 0, 0.5, 1, 2, 3, 0],
        [0, 0, 0.3, 1, 2, 2, 2, 0.5],
        [3, 2, 1, 0.5, 0.2, 0.1, 0, 0],
        [0.3, 1.5, 2.5, 1.5, 0.5, 0.1, 0, 0],
    ]
)

# --- text ----------------------------------------------------------------------
# None of these sentences may name a condition or a lay synonym of one: only the
# leak sentences below do, so that the leakage filter's work can be measured.

_SYMPTOMS: dict[int, tuple[str, ...]] = {
    MEL: (
        "The spot has grown and changed shape over the last months.",
        "It has started to bleed occasionally.",
        "The patient noticed it getting darker and larger.",
        "It has an irregular edge and several colours.",
        "It bled after minor trauma and keeps enlarging.",
    ),
    NEV: (
        "It has looked the same for years.",
        "It causes no symptoms.",
        "The patient wants it checked at a routine visit.",
        "It is small, round and evenly brown.",
        "There has been no change in size or colour.",
    ),
    PSO: (
        "The plaques are thick and scaly.",
        "Silvery scale flakes off the patches.",
        "It itches mildly and the scale sheds onto clothes.",
        "The patches flare in winter and improve with sun.",
        "There is scaling and some cracking of the skin.",
    ),
    ACN: (
        "There are many small red bumps, some with white heads.",
        "New bumps appear before menstruation.",
        "The bumps are tender and some contain pus.",
        "It is worse on oily areas of skin.",
        "Some bumps leave small dark marks when they heal.",
    ),
    ECZ: (
        "It is intensely itchy, worse at night.",
        "The skin is dry, rough and itchy.",
        "Scratching makes it weep and crust.",
        "It flares with soap and cold weather.",
        "There is a history of hay fever and asthma.",
    ),
    BCC: (
        "A shiny bump that bleeds easily and does not heal.",
        "It has slowly grown over the past year.",
        "The surface sometimes crusts and bleeds.",
        "It looks pearly with small visible blood vessels.",
        "A sore that heals and then breaks down again.",
    ),
    SEK: (
        "A rough, waxy growth that looks stuck on.",
        "It is painless but catches on clothing.",
        "Several similar brown growths have appeared with age.",
        "The surface feels greasy and crumbly.",
        "It occasionally itches and gets irritated.",
    ),
    VIT: (
        "White patches have appeared and are slowly spreading.",
        "The patches do not itch or hurt.",
        "The pale patches burn easily in the sun.",
        "The hair in the patch has turned white.",
        "The white areas have sharp borders.",
    ),
    URT: (
        "Itchy raised welts come and go within hours.",
        "The swellings move around and disappear within a day.",
        "It started after a new medication.",
        "The welts are very itchy and burn.",
        "Episodes happen almost every day.",
    ),
    TIN: (
        "A slowly expanding itchy ring with a clearer centre.",
        "The edge of the rash is scaly and raised.",
        "It started after contact with a cat.",
        "It spreads outward while the middle clears.",
        "There is mild itching and scaling at the border.",
    ),
}
_MORPHOLOGY: dict[int, tuple[str, ...]] = {
    MEL: (
        "An asymmetric dark lesion with an irregular border and several shades of "
        "brown, black and blue.",
        "A large irregular pigmented patch with uneven colour and a ragged edge.",
    ),
    NEV: (
        "A small round evenly pigmented brown macule with a smooth border.",
        "A uniform brown papule with a regular outline.",
    ),
    PSO: (
        "Well demarcated red plaques covered with silvery white scale.",
        "Thick erythematous plaques with adherent white scale.",
    ),
    ACN: (
        "Multiple small red papules and pustules, some with white centres.",
        "Scattered inflamed papules with a few whiteheads.",
    ),
    ECZ: (
        "Ill-defined pink to red patches with fine scale and excoriations.",
        "A poorly demarcated erythematous patch with a rough surface.",
    ),
    BCC: (
        "A pearly pink nodule with fine branching vessels on the surface.",
        "A translucent papule with a rolled border and telangiectasia.",
    ),
    SEK: (
        "A brown waxy plaque with a cracked, stuck-on appearance.",
        "A well circumscribed warty brown plaque with fissures.",
    ),
    VIT: (
        "Sharply demarcated depigmented white patches.",
        "Milk-white macules with clear borders on otherwise normal skin.",
    ),
    URT: (
        "Raised pale red wheals, some with lighter centres.",
        "Transient oedematous plaques with a pale centre and red rim.",
    ),
    TIN: (
        "An annular red plaque with a scaly advancing edge and central clearing.",
        "A ring-shaped lesion with a raised scaly border.",
    ),
}
_DERM1M_SYMPTOMS: dict[int, tuple[str, ...]] = {
    MEL: ("growth, bleeding", "changing color", "enlarging, irregular border"),
    NEV: ("asymptomatic", "none"),
    PSO: ("scaling, itching", "scaling", "thick plaques"),
    ACN: ("pain, pustules", "tender bumps"),
    ECZ: ("itching, dryness", "itching", "itching, oozing"),
    BCC: ("bleeding, non-healing", "slow growth", "crusting"),
    SEK: ("asymptomatic", "mild itching", "rough surface"),
    VIT: ("asymptomatic", "loss of pigment"),
    URT: ("itching, swelling", "itching, burning", "transient welts"),
    TIN: ("itching, scaling", "expanding ring", "itching"),
}
_DEMOGRAPHIC_TEMPLATES = (
    "{A} {age}-year-old {person} presents with a lesion on the {site}.",
    "{age}-year-old {sex} patient with skin changes on the {site}.",
    "The patient, {a} {age}-year-old {person}, reports a problem on the {site}.",
)
_ANONYMOUS_TEMPLATES = (
    "A patient presents with a lesion on the {site}.",
    "Skin changes on the {site} of an adult patient.",
)
_DURATION_TEMPLATES = (
    "It has been present {duration}.",
    "The problem has been there {duration}.",
)
_SITE_TEMPLATES = ("It is located on the {site}.", "The {site} is affected.")
_LEAK_TEMPLATES = (
    "Biopsy showed {name}.",
    "Findings are consistent with {name}.",
    "Most likely {name}.",
    "The patient was diagnosed with {name}.",
    "Histopathology confirmed {name}.",
    "The dermatologist's impression was {name}.",
    "This is a typical presentation of {name}.",
)
_LEAK_NAMES: dict[int, tuple[str, ...]] = {
    MEL: ("melanoma", "a malignant melanoma", "a superficial spreading melanoma"),
    NEV: ("a melanocytic nevus", "a nevocytic nevus", "a congenital nevus", "a mole"),
    PSO: ("psoriasis", "plaque psoriasis", "pustular psoriasis", "scalp psoriasis"),
    ACN: ("acne", "acne vulgaris", "cystic acne"),
    ECZ: ("eczema", "nummular eczema", "atopic dermatitis", "dyshidrotic eczema"),
    BCC: ("basal cell carcinoma", "a nodular basal cell carcinoma", "a BCC"),
    SEK: ("seborrheic keratosis", "a seborrheic keratosis", "seborrheic keratoses"),
    VIT: ("vitiligo", "segmental vitiligo"),
    URT: ("urticaria", "hives", "chronic urticaria"),
    TIN: ("tinea corporis", "tinea", "ringworm", "tinea cruris"),
}
_DERMOSCOPY_SENTENCES = (
    "Dermoscopy shows a structured pigment network.",
    "Dermoscopic view of the lesion.",
    "Image taken through a dermatoscope.",
)

# --- real column names -----------------------------------------------------------

FITZ_COLUMNS = (
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
)
DDI_COLUMNS = ("", "DDI_ID", "DDI_file", "skin_tone", "malignant", "disease")
ISIC_COLUMNS = (
    "isic_id",
    "attribution",
    "copyright_license",
    "age_approx",
    "anatom_site_general",
    "diagnosis_1",
    "diagnosis_2",
    "diagnosis_3",
    "diagnosis_4",
    "diagnosis_5",
    "diagnosis_confirm_type",
    "fitzpatrick_skin_type",
    "image_type",
    "lesion_id",
    "patient_id",
    "sex",
)
DERM1M_COLUMNS = (
    "filename",
    "hierarchical_disease_label",
    "caption",
    "gender",
    "age",
    "body_location",
    "symptoms",
)
SCIN_CASE_COLUMNS = (
    ("case_id", "source", "release", "year", "age_group", "sex_at_birth")
    + ("fitzpatrick_skin_type",)
    + tuple(f"textures_{t}" for t in _SCIN_TEXTURES)
    + tuple(f"body_parts_{p}" for p in _SCIN_BODY_PARTS)
    + tuple(f"condition_symptoms_{s}" for s in _SCIN_SYMPTOMS)
    + ("condition_symptoms_no_relevant_experience", "condition_duration")
    + ("image_1_path", "image_2_path", "image_3_path")
    + ("image_1_shot_type", "image_2_shot_type", "image_3_shot_type")
)
SCIN_LABEL_COLUMNS = (
    "case_id",
    "dermatologist_skin_condition_on_label_name",
    "dermatologist_skin_condition_confidence",
    "weighted_skin_condition_label",
)
SKINCAP_COLUMNS = ("id", "ori_file_path", "source", "caption_zh_polish_en")
_SHOT_TYPES = ("CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE")

_ROMAN = ("I", "II", "III", "IV", "V", "VI")
_MIN_IMAGE_SIZE = 32
_MAX_IMAGE_SIZE = 1024


# --- configuration and summary ---------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the synthetic data; invalid values raise ``ConfigError``.

    ``n_samples`` counts the clean images across all datasets (they are split by
    ``dataset_shares``); the injected faults are extra rows on top of them, so a
    correct data layer keeps exactly ``n_samples`` rows. ``image_format_mix`` is
    the share of each dataset's images written as PNG (the rest are JPEG);
    Fitzpatrick17k and ISIC name their images ``<id>.jpg`` and so stay JPEG.
    ``leak_fraction`` is the share of descriptions that contain one sentence
    giving the label away; ``text_noise`` the share of symptom and morphology
    sentences taken from another condition; ``skincap_fraction`` the share of
    Fitzpatrick17k and DDI images that get a SkinCap caption. Set every ``n_*``
    fault count to 0 for clean data.
    """

    n_samples: int = 800
    seed: int = 0
    image_size: int = 64
    dataset_shares: Mapping[str, float] = field(
        default_factory=lambda: dict(_DEFAULT_SHARES)
    )
    image_format_mix: Mapping[str, float] = field(
        default_factory=lambda: dict(_DEFAULT_PNG_SHARE)
    )
    leak_fraction: float = 0.35
    text_noise: float = 0.2
    skincap_fraction: float = 0.5
    unknown_fitzpatrick_fraction: float = 0.05
    n_corrupt_images: int = 3
    n_truncated_images: int = 3
    n_missing_images: int = 3
    n_malformed_rows: int = 3
    n_empty_labels: int = 1
    n_invalid_fitzpatrick: int = 1
    n_wrongly_labelled: int = 3
    n_dermoscopic_isic: int = 3
    n_dermoscopy_mentions: int = 3

    def __post_init__(self) -> None:
        _check_int(self, "n_samples", low=1)
        _check_int(self, "seed", low=0)
        _check_int(self, "image_size", low=_MIN_IMAGE_SIZE, high=_MAX_IMAGE_SIZE)
        for name in (
            "leak_fraction",
            "text_noise",
            "skincap_fraction",
            "unknown_fitzpatrick_fraction",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"SynthConfig.{name} must be a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"SynthConfig.{name} must be between 0 and 1, got {value!r}"
                )
        for kind in FAULT_KINDS:
            _check_int(self, _FAULT_FIELDS[kind], low=0)
        self._check_shares()
        self._check_formats()

    def _check_shares(self) -> None:
        shares = self.dataset_shares
        unknown = sorted(set(shares) - set(_DATASETS))
        if unknown:
            raise ConfigError(
                f"SynthConfig.dataset_shares has unknown datasets {unknown}; "
                f"expected some of {list(_DATASETS)}"
            )
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"SynthConfig.dataset_shares[{name!r}] must be between 0 and 1, "
                    f"got {value!r}"
                )
        if not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6):
            raise ConfigError(
                "SynthConfig.dataset_shares must sum to 1, "
                f"got {sum(shares.values())!r}"
            )

    def _check_formats(self) -> None:
        mix = self.image_format_mix
        unknown = sorted(set(mix) - set(_DATASETS))
        if unknown:
            raise ConfigError(
                f"SynthConfig.image_format_mix has unknown datasets {unknown}; "
                f"expected some of {list(_DATASETS)}"
            )
        for name, value in mix.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"SynthConfig.image_format_mix[{name!r}] (share of PNG images) "
                    f"must be between 0 and 1, got {value!r}"
                )
            if name in _JPEG_ONLY and value != 0.0:
                raise ConfigError(
                    f"SynthConfig.image_format_mix[{name!r}] must be 0: {name} names "
                    f"its images <id>.jpg, so they are always JPEG"
                )

    def fault_count(self, kind: str) -> int:
        """How many faults of ``kind`` (one of ``FAULT_KINDS``) to inject."""
        return int(getattr(self, _FAULT_FIELDS[kind]))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dataset_shares"] = dict(self.dataset_shares)
        out["image_format_mix"] = dict(self.image_format_mix)
        return out


_FAULT_FIELDS = {
    "corrupt_image": "n_corrupt_images",
    "truncated_image": "n_truncated_images",
    "missing_image": "n_missing_images",
    "malformed_row": "n_malformed_rows",
    "empty_label": "n_empty_labels",
    "invalid_fitzpatrick": "n_invalid_fitzpatrick",
    "wrongly_labelled": "n_wrongly_labelled",
    "dermoscopic_isic": "n_dermoscopic_isic",
    "dermoscopy_mention": "n_dermoscopy_mentions",
}


def _check_int(config: SynthConfig, name: str, *, low: int, high: int | None = None):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"SynthConfig.{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"SynthConfig.{name} must be {bound}, got {value!r}")


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault: which row, in which file, at which line.

    ``line`` is the 1-based line of the row in ``source_file`` (the header is
    line 1); ``source_file`` is relative to the data root, with "/" separators.
    """

    kind: str
    sample_id: str
    dataset: str
    source_file: str
    line: int


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote.

    ``counts`` maps dataset -> canonical condition -> number of clean images
    (faults excluded; they sum to ``config.n_samples``). ``faults`` maps each
    fault kind to the sample ids ("<dataset>:<image_id>") that carry it, and
    ``fault_rows`` gives file and line of each. ``leaked_sample_ids`` are the
    clean samples whose description (Derm1M caption or SkinCap caption) contains
    a sentence that names the label. ``rows`` maps each metadata file (relative
    to the data root) to its number of data rows, faults included.

    The image id is the source's own name of the image: Fitzpatrick17k md5hash,
    DDI DDI_file, ISIC isic_id, Derm1M filename, SCIN image_N_path.
    """

    config: SynthConfig
    counts: dict[str, dict[str, int]]
    faults: dict[str, tuple[str, ...]]
    fault_rows: tuple[FaultRecord, ...]
    leaked_sample_ids: tuple[str, ...]
    rows: dict[str, int]
    n_images: int

    @property
    def n_clean(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def condition_counts(self) -> dict[str, int]:
        """Clean images per condition, over all datasets."""
        out = dict.fromkeys(CONDITIONS, 0)
        for per_dataset in self.counts.values():
            for condition, n in per_dataset.items():
                out[condition] += n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "synthetic": True,
            "config": self.config.to_dict(),
            "counts": self.counts,
            "faults": {k: list(v) for k, v in self.faults.items()},
            "fault_rows": [dataclasses.asdict(r) for r in self.fault_rows],
            "leaked_sample_ids": list(self.leaked_sample_ids),
            "rows": self.rows,
            "n_images": self.n_images,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> SynthSummary:
        return cls(
            config=SynthConfig(**payload["config"]),
            counts={d: dict(c) for d, c in payload["counts"].items()},
            faults={k: tuple(v) for k, v in payload["faults"].items()},
            fault_rows=tuple(FaultRecord(**r) for r in payload["fault_rows"]),
            leaked_sample_ids=tuple(payload["leaked_sample_ids"]),
            rows=dict(payload["rows"]),
            n_images=int(payload["n_images"]),
        )


def read_summary(out_dir: str | Path) -> SynthSummary:
    """Read ``synthetic.json`` that ``generate`` wrote into ``out_dir``."""
    path = Path(out_dir) / "synthetic.json"
    with open(path, encoding="utf-8") as fh:
        return SynthSummary.from_dict(json.load(fh))


# --- planning --------------------------------------------------------------------


@dataclass
class _Item:
    """One image (or image-less row) to write, with what it shows."""

    dataset: str
    condition: int  # what the image shows
    fault: str | None = None
    image_id: str = ""
    rel_path: str = ""  # image path relative to the data root
    fmt: str = "JPEG"
    fitz: int = 1  # skin type of the background
    shape_seed: int = 0  # the lesion (shared by views of one lesion)
    view_seed: int = 0  # this photograph of it
    dermoscopic: bool = False
    row: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # SCIN label columns

    @property
    def sample_id(self) -> str:
        return f"{self.dataset}:{self.image_id}"


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    raw = np.asarray(weights, dtype=float)
    raw = raw / raw.sum() * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def _plan_counts(config: SynthConfig) -> dict[str, list[int]]:
    """Clean images per dataset and condition, balanced over conditions.

    Datasets that hold few conditions are filled first, each unit going to the
    allowed condition that is furthest below its overall share; the datasets
    that hold all conditions then make up the difference.
    """
    shares = [config.dataset_shares.get(d, 0.0) for d in _DATASETS]
    per_dataset = dict(
        zip(_DATASETS, _largest_remainder(config.n_samples, shares), strict=True)
    )
    need = np.full(len(CONDITIONS), config.n_samples / len(CONDITIONS))
    plan: dict[str, list[int]] = {}
    order = sorted(_DATASETS, key=lambda d: len(_DATASET_CONDITIONS[d]))
    for dataset in order:
        allowed = np.array(_DATASET_CONDITIONS[dataset])
        counts = [0] * len(CONDITIONS)
        for _ in range(per_dataset[dataset]):
            pick = int(allowed[np.argmax(need[allowed])])
            counts[pick] += 1
            need[pick] -= 1
        plan[dataset] = counts
    return {d: plan[d] for d in _DATASETS}


def _plan_faults(config: SynthConfig) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {d: [] for d in _DATASETS}
    for kind in FAULT_KINDS:
        targets = _FAULT_DATASETS[kind]
        for i in range(config.fault_count(kind)):
            out[targets[i % len(targets)]].append(kind)
    return out


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _weighted(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray):
    """One category per row, drawn from ``weights[rows]`` (unnormalised)."""
    cum = np.cumsum(weights[rows], axis=1)
    u = rng.random(len(rows)) * cum[:, -1]
    return (u[:, None] >= cum).sum(axis=1)


def _ages(rng: np.random.Generator, conditions: np.ndarray) -> np.ndarray:
    mean, spread = _AGES[conditions, 0], _AGES[conditions, 1]
    return np.clip(np.rint(rng.normal(mean, spread)), 1, 95).astype(int)


def _fitz_types(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(1, 7, size=n)


def _base_items(
    rng: np.random.Generator, dataset: str, counts: list[int], faults: list[str]
) -> list[_Item]:
    """Clean items plus one item per fault, in random order."""
    items = [_Item(dataset, c) for c, n in enumerate(counts) for _ in range(n)]
    allowed = _DATASET_CONDITIONS[dataset]
    for kind in faults:
        items.append(_Item(dataset, allowed[int(rng.integers(len(allowed)))], kind))
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    for item in items:
        item.fitz = int(rng.integers(1, 7))
        item.shape_seed = int(rng.integers(2**63))
        item.view_seed = int(rng.integers(2**63))
    return items


def _format_for(rng: np.random.Generator, config: SynthConfig, item: _Item) -> str:
    if item.fault in ("corrupt_image", "truncated_image"):
        return "JPEG"  # a broken file named .jpg, as found in the wild
    png = config.image_format_mix.get(item.dataset, 0.0)
    return "PNG" if rng.random() < png else "JPEG"


def _ext(fmt: str) -> str:
    return ".png" if fmt == "PNG" else ".jpg"


def _plan_fitzpatrick(
    rng: np.random.Generator, config: SynthConfig, counts: list[int], faults: list[str]
) -> list[_Item]:
    items = _base_items(rng, "fitzpatrick17k", counts, faults)
    for i, item in enumerate(items):
        md5 = hashlib.md5(
            f"mlkit-synthetic/fitzpatrick17k/{config.seed}/{i}".encode()
        ).hexdigest()
        item.image_id = md5
        item.rel_path = f"fitzpatrick17k/images/{md5}.jpg"
        label_condition = item.condition
        if item.fault == "wrongly_labelled":
            # The image shows another condition than the label says.
            others = [c for c in range(len(CONDITIONS)) if c != item.condition]
            item.condition = others[int(rng.integers(len(others)))]
        unknown = rng.random() < config.unknown_fitzpatrick_fraction
        scale = -1 if unknown else item.fitz
        if item.fault == "invalid_fitzpatrick":
            scale = 9
        centaur = scale
        if scale in range(1, 7) and rng.random() < 0.3:
            centaur = int(np.clip(scale + rng.choice((-1, 1)), 1, 6))
        nine, three = _FITZ_PARTITIONS[label_condition]
        label = _pick(rng, _FITZ_LABELS[label_condition])
        if item.fault == "empty_label":
            label = nine = three = ""
        qc = ""
        if item.fault == "wrongly_labelled":
            qc = "3 Wrongly labelled"
        elif rng.random() < 0.1:
            qc = _pick(rng, _FITZ_QC)
        url = f"https://synthetic.invalid/fitzpatrick17k/{md5}.jpg"
        item.row = {
            "md5hash": md5,
            "fitzpatrick_scale": str(scale),
            "fitzpatrick_centaur": str(centaur),
            "label": label,
            "nine_partition_label": nine,
            "three_partition_label": three,
            "qc": qc,
            "url": url,
            "url_alphanum": "".join(ch for ch in url if ch.isalnum()),
        }
    return items


def _plan_ddi(
    rng: np.random.Generator, config: SynthConfig, counts: list[int], faults: list[str]
) -> list[_Item]:
    items = _base_items(rng, "ddi", counts, faults)
    for i, item in enumerate(items):
        item.fmt = _format_for(rng, config, item)
        name = f"{i + 1:06d}{_ext(item.fmt)}"
        item.image_id = name
        item.rel_path = f"ddi/images/{name}"
        tone = {1: "12", 2: "12", 3: "34", 4: "34", 5: "56", 6: "56"}[item.fitz]
        if item.fault == "invalid_fitzpatrick":
            tone = "78"
        disease = _pick(rng, _DDI_LABELS[item.condition])
        if item.fault == "empty_label":
            disease = ""
        item.row = {
            "": str(i),
            "DDI_ID": str(i + 1),
            "DDI_file": name,
            "skin_tone": tone,
            "malignant": str(item.condition in _MALIGNANT),
            "disease": disease,
        }
    return items


def _plan_isic(
    rng: np.random.Generator, config: SynthConfig, counts: list[int], faults: list[str]
) -> list[_Item]:
    # Lesions of 1-3 images; patients of 1-3 lesions. Views of one lesion share
    # its shape and the patient's skin, so a split that ignores groups leaks.
    items = _base_items(rng, "isic", counts, faults)
    by_condition: dict[int, list[_Item]] = {}
    for item in items:
        key = -1 if item.fault else item.condition
        by_condition.setdefault(key, []).append(item)
    lesions: list[list[_Item]] = []
    for key in sorted(by_condition):
        group = by_condition[key]
        while group:
            size = 1 if key == -1 else int(rng.choice((1, 2, 3), p=(0.4, 0.35, 0.25)))
            lesions.append(group[:size])
            group = group[size:]
    lesions = [lesions[i] for i in rng.permutation(len(lesions))]
    lesion_ids = rng.choice(9_000_000, size=len(lesions), replace=False) + 1_000_000
    patient_ids = rng.choice(9_000_000, size=len(lesions), replace=False) + 1_000_000
    patient = 0
    remaining = 0
    patient_meta: dict[str, Any] = {}
    for li, lesion in enumerate(lesions):
        if remaining == 0:
            patient = li
            remaining = int(rng.integers(1, 4))
            first = lesion[0]
            patient_meta = {
                "fitz": first.fitz,
                "sex": _pick(rng, ("male", "female")),
                "age": int(_ages(rng, np.array([first.condition]))[0]) // 5 * 5,
                "known_fitz": rng.random() < 0.6,
            }
        remaining -= 1
        site = int(_weighted(rng, _SITE_WEIGHTS, np.array([lesion[0].condition]))[0])
        for item in lesion:
            item.fitz = patient_meta["fitz"]
            item.shape_seed = lesion[0].shape_seed
            item.row = {
                "lesion_id": f"IL_{lesion_ids[li]:07d}",
                "patient_id": f"IP_{patient_ids[patient]:07d}",
                "sex": patient_meta["sex"],
                "age_approx": str(max(patient_meta["age"], 5)),
                "anatom_site_general": _SITE_ISIC[site],
                "fitzpatrick_skin_type": _ROMAN[item.fitz - 1]
                if patient_meta["known_fitz"]
                else "",
            }
    ids = np.sort(rng.choice(9_000_000, size=len(items), replace=False))
    for item, number in zip(items, ids.tolist(), strict=True):
        item.image_id = f"ISIC_{number:07d}"
        item.rel_path = f"isic/images/{item.image_id}.jpg"
        d1, d2, d3s = _ISIC_DIAGNOSES[item.condition]
        d3 = _pick(rng, d3s)
        if item.fault == "empty_label":
            d1 = d2 = d3 = ""
        image_type = _pick(rng, _ISIC_IMAGE_TYPES)
        if item.fault == "dermoscopic_isic":
            image_type = "dermoscopic"
            item.dermoscopic = True
        confirm = (
            "histopathology"
            if item.condition in _MALIGNANT
            else _pick(rng, ("histopathology", "single image expert consensus"))
        )
        item.row = {
            "isic_id": item.image_id,
            "attribution": "mlkit synthetic data (not real patients)",
            "copyright_license": "CC0",
            "diagnosis_1": d1,
            "diagnosis_2": d2,
            "diagnosis_3": d3,
            "diagnosis_4": "",
            "diagnosis_5": "",
            "diagnosis_confirm_type": confirm if d1 else "",
            "image_type": image_type,
            **item.row,
        }
    return items


def _plan_derm1m(
    rng: np.random.Generator, config: SynthConfig, counts: list[int], faults: list[str]
) -> tuple[list[_Item], np.ndarray]:
    items = _base_items(rng, "derm1m", counts, faults)
    conditions = np.array([item.condition for item in items], dtype=int)
    png = np.array([_format_for(rng, config, item) == "PNG" for item in items])
    columns, leaked = _derm1m_columns(
        rng,
        conditions,
        png,
        leak_fraction=config.leak_fraction,
        noise=config.text_noise,
        serial_start=int(rng.integers(100_000, 900_000)),
    )
    values = {name: column.to_pylist() for name, column in columns.items()}
    for i, item in enumerate(items):
        row = {name: column[i] for name, column in values.items()}
        item.fmt = "PNG" if png[i] else "JPEG"
        if item.fault == "dermoscopy_mention":
            item.dermoscopic = True
            sentence = _pick(rng, _DERMOSCOPY_SENTENCES)
            row["caption"] = f"{sentence} {row['caption']}"
        if item.fault == "empty_label":
            row["hierarchical_disease_label"] = ""
        item.image_id = row["filename"]
        item.rel_path = f"derm1m/{row['filename']}"
        item.row = row
    return items, leaked


def _plan_scin(
    rng: np.random.Generator, config: SynthConfig, counts: list[int], faults: list[str]
) -> list[_Item]:
    """Cases of 1-3 images of one lesion; a missing-image fault is its own case."""
    cases: list[list[_Item]] = []
    for condition, n in enumerate(counts):
        while n > 0:
            size = min(n, int(rng.choice((1, 2, 3), p=(0.4, 0.35, 0.25))))
            cases.append([_Item("scin", condition) for _ in range(size)])
            n -= size
    allowed = _DATASET_CONDITIONS["scin"]
    for kind in faults:
        condition = allowed[int(rng.integers(len(allowed)))]
        cases.append([_Item("scin", condition, kind)])
    cases = [cases[i] for i in rng.permutation(len(cases))]
    case_ids = rng.choice(2**62, size=len(cases), replace=False) - 2**61
    image_numbers = rng.choice(2**62, size=sum(map(len, cases)), replace=False) - 2**61
    numbers = iter(image_numbers.tolist())
    items: list[_Item] = []
    for case_id, case in zip(case_ids.tolist(), cases, strict=True):
        condition = case[0].condition
        fitz = int(rng.integers(1, 7))
        shape_seed = int(rng.integers(2**63))
        paths = []
        for item in case:
            item.fitz = fitz
            item.shape_seed = shape_seed
            item.view_seed = int(rng.integers(2**63))
            item.fmt = _format_for(rng, config, item)
            item.image_id = f"dataset/images/{next(numbers)}{_ext(item.fmt)}"
            item.rel_path = f"scin/{item.image_id}"
            paths.append(item.image_id)
        case[0].row = _scin_case_row(rng, config, str(case_id), condition, fitz, paths)
        case[0].labels = _scin_labels(rng, condition)
        items.extend(case)
    return items


def _scin_case_row(
    rng: np.random.Generator,
    config: SynthConfig,
    case_id: str,
    condition: int,
    fitz: int,
    paths: list[str],
) -> dict[str, str]:
    profile = condition
    if rng.random() < config.text_noise:
        profile = int(rng.integers(len(CONDITIONS)))
    age = int(max(_ages(rng, np.array([condition]))[0], 18))
    age_group = next(g for top, g in _SCIN_AGE_GROUPS if age <= top)
    if rng.random() < 0.05:
        age_group = "AGE_UNKNOWN"
    unknown = rng.random() < config.unknown_fitzpatrick_fraction
    row = {
        "case_id": case_id,
        "source": "SYNTHETIC",
        "release": "SYNTHETIC",
        "year": str(int(rng.integers(2022, 2024))),
        "age_group": age_group,
        "sex_at_birth": _pick(
            rng, ("FEMALE", "MALE", "FEMALE", "MALE", "OTHER_OR_UNSPECIFIED")
        ),
        "fitzpatrick_skin_type": "" if unknown else f"FST{fitz}",
    }
    textures = rng.random(len(_SCIN_TEXTURES)) < _SCIN_TEXTURE_P[profile]
    for name, flag in zip(_SCIN_TEXTURES, textures, strict=True):
        row[f"textures_{name}"] = "YES" if flag else ""
    site = int(_weighted(rng, _SITE_WEIGHTS, np.array([condition]))[0])
    parts = {_SITE_SCIN[site]}
    if rng.random() < 0.2:
        parts.add(_pick(rng, _SCIN_BODY_PARTS))
    for part in _SCIN_BODY_PARTS:
        row[f"body_parts_{part}"] = "YES" if part in parts else ""
    symptoms = rng.random(len(_SCIN_SYMPTOMS)) < _SCIN_SYMPTOM_P[profile]
    for name, flag in zip(_SCIN_SYMPTOMS, symptoms, strict=True):
        row[f"condition_symptoms_{name}"] = "YES" if flag else ""
    row["condition_symptoms_no_relevant_experience"] = "" if symptoms.any() else "YES"
    duration = int(_weighted(rng, _DURATION_WEIGHTS, np.array([profile]))[0])
    row["condition_duration"] = _DURATION_SCIN[duration]
    for k in range(3):
        has = k < len(paths)
        row[f"image_{k + 1}_path"] = paths[k] if has else ""
        row[f"image_{k + 1}_shot_type"] = _SHOT_TYPES[k] if has else ""
    return row


def _scin_labels(rng: np.random.Generator, condition: int) -> list[str]:
    """The label columns as Python-literal strings, as in scin_labels.csv."""
    n_extra = int(rng.choice((0, 1, 2), p=(0.4, 0.4, 0.2)))
    others = list(_SCIN_DIFFERENTIALS[condition])
    extra = [others[i] for i in rng.permutation(len(others))[:n_extra]]
    names = [_SCIN_NAMES[condition], *extra]
    weights = {
        1: [(1.0,)],
        2: [(0.5, 0.5), (0.6, 0.4), (0.67, 0.33), (0.75, 0.25)],
        3: [(0.5, 0.25, 0.25), (0.4, 0.33, 0.27), (0.6, 0.2, 0.2)],
    }[len(names)]
    chosen = weights[int(rng.integers(len(weights)))]
    confidence = [int(rng.integers(3, 6))] + [int(rng.integers(1, 4)) for _ in extra]
    return [
        repr(names),
        repr(confidence),
        repr(dict(zip(names, chosen, strict=True))),
    ]


# --- text ----------------------------------------------------------------------

_NULL = pa.scalar(None, pa.string())


def _pool_choice(
    rng: np.random.Generator, pools: Sequence[Sequence[str]], keys: np.ndarray
) -> pa.Array:
    """One entry per row, uniform from the pool that the row's key selects."""
    flat = [s for pool in pools for s in pool]
    lengths = np.array([len(pool) for pool in pools])
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    pick = offsets[keys] + (rng.random(len(keys)) * lengths[keys]).astype(int)
    return pa.array(flat, pa.string()).take(pa.array(pick))


def _per_condition(pools: Mapping[int, Sequence[str]]) -> list[Sequence[str]]:
    return [pools[c] for c in range(len(CONDITIONS))]


def _noisy(rng: np.random.Generator, conditions: np.ndarray, noise: float):
    """Conditions with a ``noise`` share replaced by a different condition."""
    shift = rng.integers(1, len(CONDITIONS), len(conditions))
    other = (conditions + shift) % len(CONDITIONS)
    return np.where(rng.random(len(conditions)) < noise, other, conditions)


def _fill(
    rng: np.random.Generator,
    templates: Sequence[str],
    slots: Mapping[str, pa.Array],
    n: int,
) -> pa.Array:
    """Fill a random template per row with the row's slot values."""
    filled = []
    for template in templates:
        parts: list[Any] = []
        for literal, name, _, _ in string.Formatter().parse(template):
            if literal:
                parts.append(literal)
            if name is not None:
                parts.append(slots[name])
        filled.append(pc.binary_join_element_wise(*parts, ""))
    choice = rng.integers(len(templates), size=n).astype(np.int8)
    if len(filled) == 1:
        return filled[0]
    return pc.choose(pa.array(choice), *filled)


def _exact_mask(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(fraction * n)]] = True
    return mask


def _leak_sentences(rng: np.random.Generator, conditions: np.ndarray) -> pa.Array:
    names = _pool_choice(rng, _per_condition(_LEAK_NAMES), conditions)
    return _fill(rng, _LEAK_TEMPLATES, {"name": names}, len(conditions))


def _sometimes(rng: np.random.Generator, values: pa.Array, p: float) -> pa.Array:
    """``values`` in a ``p`` share of rows, null (no sentence) elsewhere."""
    return pc.if_else(pa.array(rng.random(len(values)) < p), values, _NULL)


def _join(
    rng: np.random.Generator,
    pieces: Sequence[pa.Array],
    leak: pa.Array,
    leaked: np.ndarray,
) -> pa.Array:
    """Join sentences with single spaces, the leak sentence at a random place.

    Null pieces (sentences a row does not have) are skipped.
    """
    position = rng.integers(len(pieces) + 1, size=len(leaked))
    parts = []
    for k in range(len(pieces) + 1):
        parts.append(pc.if_else(pa.array(leaked & (position == k)), leak, _NULL))
        if k < len(pieces):
            parts.append(pieces[k])
    return pc.binary_join_element_wise(*parts, " ", null_handling="skip")


def _site_phrases(rng: np.random.Generator, sites: np.ndarray) -> pa.Array:
    return _pool_choice(rng, _SITE_PHRASES, sites)


def _derm1m_columns(
    rng: np.random.Generator,
    conditions: np.ndarray,
    png: np.ndarray,
    *,
    leak_fraction: float,
    noise: float,
    serial_start: int,
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Derm1M metadata columns for ``conditions``, built column-wise.

    Returns the columns (string arrays, keyed as ``DERM1M_COLUMNS``) and a mask
    of the rows whose caption leaks the label.
    """
    n = len(conditions)
    sites = _weighted(rng, _SITE_WEIGHTS, conditions)
    site_text = _site_phrases(rng, sites)
    ages = _ages(rng, conditions)
    age_known = rng.random(n) > 0.1
    female = (rng.random(n) < 0.5).astype(int)
    sex_known = rng.random(n) > 0.1

    # Caption: demographics, symptom, sometimes duration and morphology, and in
    # a leak_fraction share one sentence that names the label.
    age_text = pc.cast(pa.array(ages), pa.string())
    an = np.isin(ages, (8, 11, 18)) | ((ages >= 80) & (ages < 90))
    person = pa.array(["man", "woman"]).take(pa.array(female))
    sex_word = pa.array(["male", "female"]).take(pa.array(female))
    slots = {
        "age": age_text,
        "A": pa.array(["A", "An"]).take(pa.array(an.astype(int))),
        "a": pa.array(["a", "an"]).take(pa.array(an.astype(int))),
        "person": person,
        "sex": sex_word,
        "site": site_text,
    }
    demo = pc.if_else(
        pa.array(age_known & sex_known),
        _fill(rng, _DEMOGRAPHIC_TEMPLATES, slots, n),
        _fill(rng, _ANONYMOUS_TEMPLATES, slots, n),
    )
    symptom_source = _noisy(rng, conditions, noise)
    symptom = _pool_choice(rng, _per_condition(_SYMPTOMS), symptom_source)
    duration_source = _noisy(rng, conditions, noise)
    durations = pa.array(_DURATIONS).take(
        pa.array(_weighted(rng, _DURATION_WEIGHTS, duration_source))
    )
    duration = _sometimes(
        rng, _fill(rng, _DURATION_TEMPLATES, {"duration": durations}, n), 0.7
    )
    morphology = _pool_choice(
        rng, _per_condition(_MORPHOLOGY), _noisy(rng, conditions, noise)
    )
    morphology = _sometimes(rng, morphology, 0.4)
    leaked = _exact_mask(rng, n, leak_fraction)
    leak = _leak_sentences(rng, conditions)
    caption = _join(rng, [demo, symptom, duration, morphology], leak, leaked)

    # File names: the first path segment is the origin, as in Derm1M.
    origin = rng.choice(len(_DERM1M_ORIGINS), size=n, p=(0.3, 0.35, 0.25, 0.1))
    serial = pc.cast(pa.array(serial_start + np.arange(n)), pa.string())
    frame = pc.cast(pa.array(rng.integers(1, 60, size=n)), pa.string())
    figure = pc.cast(pa.array(rng.integers(1, 8, size=n)), pa.string())
    stem = pc.choose(
        pa.array(origin.astype(np.int8)),
        pc.binary_join_element_wise("IIYI/", serial, ""),
        pc.binary_join_element_wise("pubmed/PMC", serial, "_fig", figure, ""),
        pc.binary_join_element_wise("youtube/v", serial, "_", frame, ""),
        pc.binary_join_element_wise("edu/atlas_", serial, ""),
    )
    extension = pa.array([".jpg", ".png"]).take(pa.array(png.astype(int)))

    columns = {
        "filename": pc.binary_join_element_wise(stem, extension, ""),
        "hierarchical_disease_label": _pool_choice(
            rng, _per_condition(_DERM1M_LABELS), conditions
        ),
        "caption": caption,
        "gender": pc.if_else(pa.array(sex_known), sex_word, ""),
        "age": pc.if_else(pa.array(age_known), age_text, ""),
        "body_location": site_text,
        "symptoms": _pool_choice(rng, _per_condition(_DERM1M_SYMPTOMS), symptom_source),
    }
    return columns, leaked


def _skincap_captions(
    rng: np.random.Generator, conditions: np.ndarray, config: SynthConfig
) -> tuple[list[str], np.ndarray]:
    n = len(conditions)
    sites = _weighted(rng, _SITE_WEIGHTS, conditions)
    site_slot = {"site": _site_phrases(rng, sites)}
    site = _fill(rng, _SITE_TEMPLATES, site_slot, n)
    morphology = _pool_choice(
        rng, _per_condition(_MORPHOLOGY), _noisy(rng, conditions, config.text_noise)
    )
    symptom = _pool_choice(
        rng, _per_condition(_SYMPTOMS), _noisy(rng, conditions, config.text_noise)
    )
    leaked = _exact_mask(rng, n, config.leak_fraction)
    leak = _leak_sentences(rng, conditions)
    pieces = [morphology, site, _sometimes(rng, symptom, 0.3)]
    return _join(rng, pieces, leak, leaked).to_pylist(), leaked


# --- images --------------------------------------------------------------------

# Mean RGB of the skin background per Fitzpatrick type (1-6).
_SKIN_RGB = np.array(
    [
        [236, 206, 186],
        [222, 182, 150],
        [196, 148, 112],
        [160, 110, 76],
        [114, 76, 52],
        [70, 47, 34],
    ],
    dtype=float,
)
_SUPERSAMPLE = 2


def _rgb(values: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.asarray(values, dtype=float), 0, 255))


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, ...]:
    return _rgb(np.asarray(a, dtype=float) * (1 - t) + np.asarray(b, dtype=float) * t)


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float):
    return _rgb(np.asarray(colour, dtype=float) + rng.normal(0, amount, 3))


def _blob(
    rng: np.random.Generator,
    x: float,
    y: float,
    r: float,
    ragged: float,
    *,
    n: int = 32,
    aspect: float = 1.0,
) -> np.ndarray:
    """Closed outline around (x, y): a circle bent by a few random harmonics."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k in range(2, 6):
        radius += ragged * rng.uniform(0, 1) / k * np.cos(k * t + rng.uniform(0, 6.3))
    radius += ragged * 0.25 * rng.normal(0, 1, n)
    radius = r * np.clip(radius, 0.3, None)
    tilt = rng.uniform(0, np.pi)
    px, py = np.cos(t) * radius, np.sin(t) * radius * aspect
    c, s = np.cos(tilt), np.sin(tilt)
    return np.stack([x + c * px - s * py, y + s * px + c * py], axis=1)


def _walk(rng: np.random.Generator, start, step: float, n: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    points = [np.asarray(start, dtype=float)]
    for _ in range(n):
        angle += rng.normal(0, 0.6)
        points.append(points[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    return np.array(points)


def _in_disc(rng: np.random.Generator, x: float, y: float, r: float, n: int):
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = r * np.sqrt(rng.uniform(0, 1, n))
    return np.stack([x + radius * np.cos(angle), y + radius * np.sin(angle)], axis=1)


class _Canvas:
    """Draws in lesion coordinates: (0, 0) is the lesion centre, 1 about half
    the image; the view (position, size, rotation) maps them to pixels."""

    def __init__(self, image: Image.Image, view: np.random.Generator) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        w = image.width
        self.scale = w / 2 * view.uniform(0.85, 1.15)
        angle = view.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        self._m = np.array([[c, -s], [s, c]]) * self.scale
        self._t = np.array([w / 2, w / 2]) + view.uniform(-0.12, 0.12, 2) * w

    def _xy(self, points: np.ndarray) -> list[float]:
        return (np.asarray(points) @ self._m.T + self._t).ravel().tolist()

    def polygon(self, points, fill, draw: ImageDraw.ImageDraw | None = None) -> None:
        (draw or self.draw).polygon(self._xy(points), fill=fill)

    def line(self, points, fill, width: float, closed: bool = False) -> None:
        points = np.asarray(points)
        if closed:
            points = np.vstack([points, points[:1]])
        self.draw.line(
            self._xy(points),
            fill=fill,
            width=max(1, round(width * self.scale)),
            joint="curve",
        )

    def dots(self, centres, r: float, fill, draw=None) -> None:
        pixels = np.asarray(self._xy(centres)).reshape(-1, 2)
        radius = max(0.6, r * self.scale)
        draw = draw or self.draw
        for px, py in pixels.tolist():
            draw.ellipse(
                (px - radius, py - radius, px + radius, py + radius), fill=fill
            )

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        mask = Image.new("L", self.image.size, 0)
        return mask, ImageDraw.Draw(mask)

    def paint(self, mask: Image.Image, colour, blur: float) -> None:
        if blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(blur * self.scale))
        self.image.paste(Image.new("RGB", self.image.size, colour), mask=mask)


def _melanoma(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    r = rng.uniform(0.36, 0.52)
    outline = _blob(
        rng, 0, 0, r, rng.uniform(0.3, 0.45), n=48, aspect=rng.uniform(0.7, 1)
    )
    cv.polygon(outline, _jitter(rng, _mix(skin, (45, 28, 22), 0.85), 6))
    palette = [
        (22, 16, 20),
        (95, 55, 35),
        (85, 95, 130),
        (165, 60, 60),
        _mix(skin, (150, 100, 70), 0.6),
    ]
    for _ in range(int(rng.integers(3, 7))):
        x, y = rng.uniform(-0.5, 0.5, 2) * r
        colour = _jitter(rng, palette[int(rng.integers(len(palette)))], 8)
        cv.polygon(_blob(rng, x, y, r * rng.uniform(0.18, 0.42), 0.35, n=20), colour)


def _nevus(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    colour = np.asarray(skin) * np.array([0.5, 0.37, 0.3]) + rng.normal(0, 4, 3)
    for k in range(1 if rng.random() < 0.8 else 2):
        x, y = (0.0, 0.0) if k == 0 else tuple(rng.uniform(-0.6, 0.6, 2))
        r = rng.uniform(0.1, 0.17)
        cv.polygon(_blob(rng, x, y, r, 0.03, n=24), _rgb(colour))
        cv.polygon(_blob(rng, x, y, r * 0.6, 0.03, n=20), _mix(colour, (0, 0, 0), 0.15))


def _psoriasis(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    red = _jitter(rng, _mix(skin, (205, 70, 70), 0.6), 6)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(-0.4, 0.4, 2)
        r = rng.uniform(0.22, 0.38)
        cv.polygon(_blob(rng, x, y, r, 0.15, n=28, aspect=rng.uniform(0.6, 1)), red)
        silver = _jitter(rng, (228, 228, 232), 5)
        cv.dots(_in_disc(rng, x, y, 0.8 * r, int(rng.integers(25, 45))), 0.025, silver)


def _acne(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    n = int(rng.integers(10, 24))
    halo = _mix(skin, (200, 90, 90), 0.35)
    papule = _jitter(rng, _mix(skin, (200, 45, 50), 0.7), 6)
    for x, y in rng.uniform(-0.8, 0.8, (n, 2)).tolist():
        r = rng.uniform(0.035, 0.06)
        cv.dots([(x, y)], r * 1.6, halo)
        cv.dots([(x, y)], r, papule)
        if rng.random() < 0.45:
            cv.dots([(x, y)], r * 0.45, _jitter(rng, (250, 240, 205), 4))


def _eczema(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    mask, draw = cv.layer()
    centres = rng.uniform(-0.45, 0.45, (int(rng.integers(6, 12)), 2))
    for x, y in centres.tolist():
        cv.polygon(_blob(rng, x, y, rng.uniform(0.2, 0.4), 0.3, n=20), 255, draw)
    cv.paint(mask, _jitter(rng, _mix(skin, (215, 95, 95), 0.5), 6), blur=0.08)
    dark = _mix(skin, (180, 50, 60), 0.6)
    for x, y in centres.tolist():
        cv.dots(_in_disc(rng, x, y, 0.3, int(rng.integers(8, 16))), 0.014, dark)
    cv.dots(_in_disc(rng, 0, 0, 0.5, int(rng.integers(5, 12))), 0.012, (235, 215, 205))


def _bcc(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    r = rng.uniform(0.17, 0.26)
    cv.polygon(_blob(rng, 0, 0, r * 1.1, 0.05), _mix(skin, (215, 150, 155), 0.7))
    cv.polygon(
        _blob(rng, 0, 0, r, 0.05), _jitter(rng, _mix(skin, (238, 196, 196), 0.75), 5)
    )
    cv.dots([(-0.3 * r, -0.3 * r)], 0.3 * r, (250, 238, 238))
    vessel = _jitter(rng, (175, 30, 45), 8)
    for _ in range(int(rng.integers(2, 5))):
        start = _in_disc(rng, 0, 0, 0.6 * r, 1)[0]
        cv.line(_walk(rng, start, 0.25 * r, int(rng.integers(3, 6))), vessel, 0.012)


def _seborrheic_keratosis(cv: _Canvas, rng: np.random.Generator, skin) -> None:
    r = rng.uniform(0.28, 0.4)
    aspect = rng.uniform(0.6, 0.9)
    base = _jitter(rng, _mix(skin, (125, 85, 50), 0.7), 6)
    cv.polygon(
        _blob(rng, 0, 0, r * 1.05, 0.06, aspect=aspect), _mix(base, (0, 0, 0), 0.35)
    )
    cv.polygon(_blob(rng, 0, 0, r, 0.06, aspect=aspect), base)
    crack = _mix(base, (40, 25, 15), 0.6)
    for _ in range(int(rng.integers(5, 11))):
        start = _in_disc(rng, 0, 0, 0.6 * r, 1)[0] * np.array([1, aspect])
        cv.line(_walk(rng, start, 0.15 * r, int(rng.integers(3, 6))), crack, 0.015)
    cysts = _in_disc(rng, 0, 0, 0.6 * r, int(rng.integers(3, 7))) * np.array(
        [1, aspect]
    )
    cv.dots(cysts, 0.02, (225, 205, 160))


def _vitiligo(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(-0.45, 0.45, 2)
        colour = _jitter(rng, (248, 238, 230), 5)
        cv.polygon(_blob(rng, x, y, rng.uniform(0.22, 0.42), 0.22, n=36), colour)


def _urticaria(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    outer, outer_draw = cv.layer()
    inner, inner_draw = cv.layer()
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(-0.55, 0.55, 2)
        r = rng.uniform(0.15, 0.28)
        cv.polygon(_blob(rng, x, y, r, 0.2, n=24), 255, outer_draw)
        cv.polygon(_blob(rng, x, y, r * 0.5, 0.2, n=16), 255, inner_draw)
    cv.paint(outer, _jitter(rng, _mix(skin, (235, 115, 115), 0.55), 6), blur=0.03)
    cv.paint(inner, _mix(skin, (245, 205, 195), 0.5), blur=0.03)


def _tinea(cv: _Canvas, rng: np.random.Generator, skin: np.ndarray) -> None:
    red = _jitter(rng, _mix(skin, (200, 50, 50), 0.65), 6)
    for k in range(1 if rng.random() < 0.7 else 2):
        x, y = rng.uniform(-0.3, 0.3, 2) * (k + 1)
        r = rng.uniform(0.28, 0.42)
        ring = _blob(rng, x, y, r, 0.08, n=36, aspect=rng.uniform(0.8, 1))
        cv.line(ring, red, rng.uniform(0.05, 0.08), closed=True)
        edge = ring[rng.integers(len(ring), size=int(rng.integers(20, 36)))]
        cv.dots(edge + rng.normal(0, 0.02, edge.shape), 0.018, (238, 226, 214))


_DRAWERS = (
    _melanoma,
    _nevus,
    _psoriasis,
    _acne,
    _eczema,
    _bcc,
    _seborrheic_keratosis,
    _vitiligo,
    _urticaria,
    _tinea,
)


def _skin_background(
    shape: np.random.Generator, view: np.random.Generator, fitz: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Skin of the given type: a base colour with uneven lighting and blotches.

    The grain is added later, at the final size (see ``_render``).
    """
    skin = _SKIN_RGB[fitz - 1] + shape.normal(0, 3, 3) + shape.uniform(-7, 7)
    axis = np.linspace(-1, 1, 8)
    angle = view.uniform(0, 2 * np.pi)
    light = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]
    low = view.uniform(0, 0.06) * light + 0.025 * view.normal(0, 1, (8, 8))
    smooth = Image.fromarray(low.astype(np.float32)).resize(
        (width, width), Image.Resampling.BICUBIC
    )
    factor = 1 + np.asarray(smooth)
    pixels = skin.astype(np.float32)[None, None, :] * factor[:, :, None]
    return np.clip(pixels, 0, 255).astype(np.uint8), skin


def _render(item: _Item, size: int) -> Image.Image:
    """The picture of one item; same item and size give the same pixels."""
    shape = np.random.default_rng(item.shape_seed)
    view = np.random.default_rng(item.view_seed)
    width = size * _SUPERSAMPLE
    pixels, skin = _skin_background(shape, view, item.fitz, width)
    image = Image.fromarray(pixels)
    canvas = _Canvas(image, view)
    _DRAWERS[item.condition](canvas, shape, skin)
    if view.random() < 0.25:
        hair = _jitter(view, (35, 25, 20), 5)
        for _ in range(int(view.integers(1, 4))):
            start = view.uniform(-1, 1, 2)
            canvas.line(_walk(view, start, 0.35, 5), hair, 0.01)

    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if view.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(view.uniform(0.3, 0.8)))
    out = np.asarray(image, dtype=np.float32)
    gain = view.uniform(0.97, 1.03, 3).astype(np.float32)
    out = out * gain + np.float32(view.uniform(-5, 5))
    grain = view.standard_normal(out.shape, dtype=np.float32)
    out += grain * np.float32(view.uniform(2.0, 4.0))
    if item.dermoscopic:
        # The round field of view of a dermatoscope, black outside.
        axis = np.arange(size) - (size - 1) / 2
        outside = np.hypot(axis[None, :], axis[:, None]) > 0.47 * size
        out[outside] = 8
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _image_bytes(item: _Item, size: int) -> bytes | None:
    """Bytes of the item's file, None when the file must be missing."""
    if item.fault == "missing_image":
        return None
    if item.fault == "corrupt_image":
        # Random bytes that no decoder recognises (never a JPEG/PNG signature).
        rng = np.random.default_rng(item.view_seed)
        return b"\x00MLKIT-CORRUPT" + rng.bytes(int(rng.integers(400, 2000)))
    data = _encode(_render(item, size), item.fmt)
    if item.fault == "truncated_image":
        # Keep the whole header and cut the compressed scan data in half, as a
        # download that stopped midway leaves it: it opens, but fails to load.
        scan = data.index(b"\xff\xda")
        return data[: scan + (len(data) - scan) // 2]
    return data


# --- writing ---------------------------------------------------------------------


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    # Plain writes: the whole output is staged in a temporary directory and
    # moved into place at the end, which is what makes it atomic.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _table_rows(
    items: Sequence[_Item], columns: Sequence[str], rng: np.random.Generator
) -> list[list[str]]:
    """Rows in file order; a malformed row gets one extra unquoted field."""
    rows = []
    for item in items:
        values = [item.row[c] for c in columns]
        if item.fault == "malformed_row":
            # As if a value held an unquoted comma: one field too many.
            values.insert(int(rng.integers(1, len(values))), "see notes")
        rows.append(values)
    return rows


def _check_target(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / "synthetic.json").exists():
        raise ConfigError(
            f"{out_dir}: is not empty and holds no synthetic.json; refusing to write "
            "synthetic data over what may be real data. Choose an empty directory."
        )


_OWNED = (
    "fitzpatrick17k",
    "ddi",
    "isic",
    "derm1m",
    "scin",
    "skincap",
    "SYNTHETIC.md",
    "synthetic.json",
    "synthetic_truth.csv",
)


def generate(
    out_dir: str | Path, config: SynthConfig | None = None, *, progress: bool = False
) -> SynthSummary:
    """Write a synthetic data root into ``out_dir`` and return its summary.

    The files follow the data-root layout and formats of the real sources (see
    the module docstring). Everything is first written to a temporary directory
    next to ``out_dir`` and moved into place at the end, so a failure leaves an
    earlier output untouched. ``out_dir`` must be empty, missing, or an earlier
    output of this function (it has ``synthetic.json``); then only the entries
    this function writes are replaced. Raises ``ConfigError`` otherwise.
    """
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    _check_target(out_dir)
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        summary = _generate_into(staging, config, progress=progress)
        out_dir.mkdir(exist_ok=True)
        for name in _OWNED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            (staging / name).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "wrote synthetic data to %s: %d clean images, %d faults, %d files in %.1f s",
        out_dir,
        summary.n_clean,
        len(summary.fault_rows),
        summary.n_images,
        time.perf_counter() - started,
    )
    return summary


def _generate_into(root: Path, config: SynthConfig, *, progress: bool) -> SynthSummary:
    counts = _plan_counts(config)
    faults = _plan_faults(config)
    rngs = {d: np.random.default_rng([config.seed, i]) for i, d in enumerate(_DATASETS)}
    planners = {
        "fitzpatrick17k": _plan_fitzpatrick,
        "ddi": _plan_ddi,
        "isic": _plan_isic,
        "scin": _plan_scin,
    }
    items: dict[str, list[_Item]] = {}
    for dataset, planner in planners.items():
        items[dataset] = planner(
            rngs[dataset], config, counts[dataset], faults[dataset]
        )
    items["derm1m"], derm1m_leaked = _plan_derm1m(
        rngs["derm1m"], config, counts["derm1m"], faults["derm1m"]
    )

    # Images first: the slow part, and the one the progress bar is for.
    all_items = [item for d in _DATASETS for item in items[d]]
    n_images = 0
    for item in tqdm(
        all_items, desc="synthetic images", unit="img", disable=not progress
    ):
        data = _image_bytes(item, config.image_size)
        if data is None:
            continue
        path = root / item.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        n_images += 1

    # Metadata files; a row's line is its index + 2 (the header is line 1).
    rows: dict[str, int] = {}
    fault_rows: list[FaultRecord] = []
    tables = {
        "fitzpatrick17k": ("fitzpatrick17k/fitzpatrick17k.csv", FITZ_COLUMNS),
        "ddi": ("ddi/ddi_metadata.csv", DDI_COLUMNS),
        "isic": ("isic/metadata.csv", ISIC_COLUMNS),
        "derm1m": ("derm1m/Derm1M.csv", DERM1M_COLUMNS),
    }
    for dataset, (rel, columns) in tables.items():
        table = _table_rows(items[dataset], columns, rngs[dataset])
        _write_text(root / rel, _csv_text(columns, table))
        rows[rel] = len(table)
        fault_rows += [
            FaultRecord(item.fault, item.sample_id, dataset, rel, line)
            for line, item in enumerate(items[dataset], start=2)
            if item.fault
        ]
    fault_rows += _write_scin(root, items["scin"], rngs["scin"], rows)
    skincap_leaked = _write_skincap(root, config, items, rows)

    leaked = [
        item.sample_id
        for item, flag in zip(items["derm1m"], derm1m_leaked, strict=True)
        if flag and not item.fault
    ] + skincap_leaked
    order = {kind: i for i, kind in enumerate(FAULT_KINDS)}
    fault_rows.sort(key=lambda r: (order[r.kind], r.sample_id))
    summary = SynthSummary(
        config=config,
        counts={
            d: {CONDITIONS[c]: n for c, n in enumerate(counts[d])} for d in _DATASETS
        },
        faults={
            kind: tuple(r.sample_id for r in fault_rows if r.kind == kind)
            for kind in FAULT_KINDS
        },
        fault_rows=tuple(fault_rows),
        leaked_sample_ids=tuple(sorted(leaked)),
        rows=rows,
        n_images=n_images,
    )
    payload = json.dumps(summary.to_dict(), indent=2, sort_keys=True)
    _write_text(root / "synthetic.json", payload + "\n")
    _write_truth(root, items, set(leaked))
    _write_text(root / "SYNTHETIC.md", _readme(summary))
    return summary


def _write_scin(
    root: Path, items: list[_Item], rng: np.random.Generator, rows: dict[str, int]
) -> list[FaultRecord]:
    cases = [item for item in items if item.row]
    case_rows = [[item.row[c] for c in SCIN_CASE_COLUMNS] for item in cases]
    _write_text(root / "scin/scin_cases.csv", _csv_text(SCIN_CASE_COLUMNS, case_rows))
    label_rows = [
        [item.row["case_id"], *item.labels]
        for item in (cases[i] for i in rng.permutation(len(cases)))
    ]
    _write_text(
        root / "scin/scin_labels.csv", _csv_text(SCIN_LABEL_COLUMNS, label_rows)
    )
    rows["scin/scin_cases.csv"] = len(case_rows)
    rows["scin/scin_labels.csv"] = len(label_rows)
    line = {item.row["case_id"]: i + 2 for i, item in enumerate(cases)}
    records = []
    case_line = 0
    for item in items:
        if item.row:
            case_line = line[item.row["case_id"]]
        if item.fault:
            records.append(
                FaultRecord(
                    item.fault, item.sample_id, "scin", "scin/scin_cases.csv", case_line
                )
            )
    return records


def _write_skincap(
    root: Path, config: SynthConfig, items: dict[str, list[_Item]], rows: dict[str, int]
) -> list[str]:
    """Captions for a share of the clean Fitzpatrick17k and DDI images."""
    rng = np.random.default_rng([config.seed, len(_DATASETS)])
    chosen = [
        item
        for dataset in ("fitzpatrick17k", "ddi")
        for item in items[dataset]
        if not item.fault and rng.random() < config.skincap_fraction
    ]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    conditions = np.array([item.condition for item in chosen], dtype=int)
    captions, leaked = _skincap_captions(rng, conditions, config)
    table = []
    for i, item in enumerate(chosen):
        if item.dataset == "ddi":
            source, file_name = "ddi", item.image_id
        else:
            source = _pick(rng, ("fitzpatrick17k", "fitz17k"))
            file_name = f"{item.image_id}.jpg"
        table.append([str(i + 1), file_name, source, str(captions[i])])
    _write_text(root / "skincap/skincap.csv", _csv_text(SKINCAP_COLUMNS, table))
    rows["skincap/skincap.csv"] = len(table)
    return [item.sample_id for item, flag in zip(chosen, leaked, strict=True) if flag]


def _write_truth(root: Path, items: dict[str, list[_Item]], leaked: set[str]) -> None:
    """What each image really shows, for checking the data layer against."""
    header = ("sample_id", "condition", "fitzpatrick", "leaked", "fault")
    table = [
        [
            item.sample_id,
            CONDITIONS[item.condition],
            str(item.fitz),
            str(item.sample_id in leaked),
            item.fault or "",
        ]
        for dataset in _DATASETS
        for item in items[dataset]
    ]
    _write_text(root / "synthetic_truth.csv", _csv_text(header, table))


def _readme(summary: SynthSummary) -> str:
    config = summary.config.to_dict()
    lines = [
        "# Synthetic data: not real patients",
        "",
        "Everything under this directory was generated by `mlkit.data.synthetic`. "
        "No image shows a real person and no row describes a real patient. The files "
        "imitate the formats of Fitzpatrick17k, DDI, ISIC, Derm1M, SCIN and SkinCap "
        "(file layout, column names, label spellings) so that mlkit's data pipeline "
        "can be demonstrated and tested without downloading those datasets.",
        "",
        "## How it was generated",
        "",
        "- Images: a skin-coloured background for a Fitzpatrick type 1-6 with "
        "lighting, blotches and grain, and a drawn lesion whose shape, colour and "
        "texture depend on the condition, at a random position, size and rotation, "
        "with colour jitter, blur and noise.",
        "- Text: descriptions built from sentence pools per condition (symptoms, "
        "duration, body site, demographics, morphology); "
        f"{config['text_noise']:.0%} of the sentences come from another condition, "
        f"and {config['leak_fraction']:.0%} of descriptions contain one sentence "
        "that names the diagnosis (label leakage, for the leakage filter to remove).",
        "- Faults injected on purpose (corrupt, truncated and missing images, "
        "malformed rows, empty labels, invalid Fitzpatrick values, wrongly labelled "
        "and dermoscopic rows) are listed with file and line in `synthetic.json`.",
        "- `synthetic_truth.csv` records what each image really shows.",
        "",
        "## Parameters",
        "",
    ]
    lines += [f"- `{key}`: {config[key]}" for key in sorted(config)]
    lines += ["", "## Clean images per dataset", ""]
    lines += [f"- {d}: {sum(c.values())}" for d, c in summary.counts.items()]
    return "\n".join(lines) + "\n"


# --- large Derm1M metadata (benchmarks) ------------------------------------------


def _quote(values: pa.Array) -> pa.Array:
    """CSV-quote the values that need it, like the csv module's minimal quoting."""
    needs = pc.or_(
        pc.or_(pc.match_substring(values, ","), pc.match_substring(values, '"')),
        pc.match_substring(values, "\n"),
    )
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise(
        '"', pc.replace_substring(values, '"', '""'), '"', ""
    )
    return pc.if_else(needs, quoted, values)


_DERM1M_CHUNK = 250_000


def write_derm1m_csv(path: str | Path, n_rows: int, *, seed: int = 0) -> Path:
    """Write a Derm1M-style metadata CSV of ``n_rows`` rows (no images), fast.

    For benchmarks of the readers at the real dataset's size (about a million
    rows). Columns, labels and captions are drawn as for ``generate``'s Derm1M
    file (with the default leak fraction and noise), column-wise with Arrow
    compute functions, in chunks to bound memory. Written atomically; the same
    ``seed`` and ``n_rows`` give the same bytes. Raises ``ConfigError`` for a
    negative ``n_rows`` or ``seed``.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int | np.integer):
        raise ConfigError(f"n_rows must be an integer, got {n_rows!r}")
    if n_rows < 0:
        raise ConfigError(f"n_rows must be >= 0, got {n_rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    started = time.perf_counter()
    path = Path(path)
    rng = np.random.default_rng([seed, 1_000_000])
    with atomic_open(path, "wb") as fh:
        fh.write((",".join(DERM1M_COLUMNS) + "\n").encode())
        for start in range(0, n_rows, _DERM1M_CHUNK):
            size = min(_DERM1M_CHUNK, n_rows - start)
            columns, _ = _derm1m_columns(
                rng,
                rng.integers(len(CONDITIONS), size=size),
                np.zeros(size, dtype=bool),
                leak_fraction=SynthConfig.leak_fraction,
                noise=SynthConfig.text_noise,
                serial_start=100_000 + start,
            )
            fields = [_quote(columns[name]) for name in DERM1M_COLUMNS]
            lines = pc.binary_join_element_wise(*fields, ",")
            lines = pc.binary_join_element_wise(lines, "", "\n")
            fh.write(_string_bytes(lines))
    log.info(
        "wrote %d Derm1M-style rows to %s in %.1f s",
        n_rows,
        path,
        time.perf_counter() - started,
    )
    return path


def _string_bytes(values: pa.Array) -> bytes:
    """All strings of an Arrow string array, concatenated, without copying each."""
    values = values.cast(pa.large_string())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)
    offsets = offsets[values.offset : values.offset + len(values) + 1]
    return values.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
