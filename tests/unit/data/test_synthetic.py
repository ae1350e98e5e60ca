"""Tests of mlkit/data/synthetic.py: formats, faults, balance and determinism."""

from __future__ import annotations

import ast
import csv
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mlkit._io import sha256_file
from mlkit.data.synthetic import (
    CONDITIONS,
    FAULT_KINDS,
    SynthConfig,
    SynthSummary,
    generate,
    read_summary,
    write_derm1m_csv,
)
from mlkit.errors import ConfigError

# The real column names of the public files, written out independently of the
# module so that a change there cannot silently change what is checked here.
REAL_COLUMNS = {
    "fitzpatrick17k/fitzpatrick17k.csv": [
        "md5hash",
        "fitzpatrick_scale",
        "fitzpatrick_centaur",
        "label",
        "nine_partition_label",
        "three_partition_label",
        "qc",
        "url",
        "url_alphanum",
    ],
    "ddi/ddi_metadata.csv": [
        "",
        "DDI_ID",
        "DDI_file",
        "skin_tone",
        "malignant",
        "disease",
    ],
    "derm1m/Derm1M.csv": [
        "filename",
        "hierarchical_disease_label",
        "caption",
        "gender",
        "age",
        "body_location",
        "symptoms",
    ],
    "scin/scin_labels.csv": [
        "case_id",
        "dermatologist_skin_condition_on_label_name",
        "dermatologist_skin_condition_confidence",
        "weighted_skin_condition_label",
    ],
    "skincap/skincap.csv": ["id", "ori_file_path", "source", "caption_zh_polish_en"],
}
ISIC_REQUIRED = [
    "isic_id",
    "diagnosis_1",
    "diagnosis_2",
    "diagnosis_3",
    "diagnosis_4",
    "diagnosis_5",
    "image_type",
    "sex",
    "age_approx",
    "anatom_site_general",
    "lesion_id",
    "patient_id",
]
SCIN_REQUIRED = [
    "case_id",
    "age_group",
    "sex_at_birth",
    "fitzpatrick_skin_type",
    "image_1_path",
    "image_2_path",
    "image_3_path",
    "textures_raised_or_bumpy",
    "body_parts_head_or_neck",
    "condition_symptoms_itching",
    "condition_duration",
]
METADATA = {
    "fitzpatrick17k": "fitzpatrick17k/fitzpatrick17k.csv",
    "ddi": "ddi/ddi_metadata.csv",
    "isic": "isic/metadata.csv",
    "derm1m": "derm1m/Derm1M.csv",
    "scin": "scin/scin_cases.csv",
}
# Words that give a label away; clean sentences never contain them.
LABEL_WORDS = re.compile(
    r"\b(?:melanoma|nevus|psoriasis|acne|eczema|carcinoma|BCC|keratos[ie]s|vitiligo|"
    r"urticaria|hives|tinea|ringworm|dermatitis|mole)\b",
    re.IGNORECASE,
)
SMALL = SynthConfig(n_samples=60, image_size=32, seed=3)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")


def image_path(root: Path, sample_id: str) -> Path:
    dataset, image_id = sample_id.split(":", 1)
    relative = {
        "fitzpatrick17k": f"fitzpatrick17k/images/{image_id}.jpg",
        "ddi": f"ddi/images/{image_id}",
        "isic": f"isic/images/{image_id}.jpg",
        "derm1m": f"derm1m/{image_id}",
        "scin": f"scin/{image_id}",
    }[dataset]
    return root / relative


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SynthSummary]:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return root, generate(root, SMALL)


@pytest.fixture(scope="module")
def truth(small) -> pd.DataFrame:
    root, _ = small
    return read_table(root / "synthetic_truth.csv").set_index("sample_id")


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, small):
    root, _ = small
    config = SynthConfig(n_samples=60, image_size=32, seed=3)
    again = generate(tmp_path / "again", config, progress=True)
    assert again == read_summary(root)
    assert digests(tmp_path / "again") == digests(root)

    other = generate(tmp_path / "other", SynthConfig(n_samples=60, image_size=32))
    assert other.fault_rows != again.fault_rows
    assert digests(tmp_path / "other") != digests(root)


def test_files_have_the_real_column_names(small):
    root, _ = small
    for relative, columns in REAL_COLUMNS.items():
        assert read_rows(root / relative)[0] == columns, relative
    isic = read_rows(root / "isic/metadata.csv")[0]
    assert set(ISIC_REQUIRED) <= set(isic)
    scin = read_rows(root / "scin/scin_cases.csv")[0]
    assert set(SCIN_REQUIRED) <= set(scin)
    assert (root / "SYNTHETIC.md").read_text().startswith("# Synthetic data")


def test_counts_sum_to_n_samples_plus_faults(small, truth):
    root, summary = small
    assert summary.n_clean == SMALL.n_samples
    faults_per_dataset = Counter(r.dataset for r in summary.fault_rows)
    assert len(summary.fault_rows) == sum(SMALL.fault_count(k) for k in FAULT_KINDS)
    for dataset, per_condition in summary.counts.items():
        in_truth = (truth.index.str.split(":").str[0] == dataset).sum()
        assert in_truth == sum(per_condition.values()) + faults_per_dataset[dataset]
    for dataset in ("fitzpatrick17k", "ddi", "isic", "derm1m"):
        rows = len(read_rows(root / METADATA[dataset])) - 1
        expected = sum(summary.counts[dataset].values()) + faults_per_dataset[dataset]
        assert rows == expected == summary.rows[METADATA[dataset]]


def test_fault_records_point_at_real_rows(small):
    root, summary = small
    assert {r.kind for r in summary.fault_rows} == set(FAULT_KINDS)
    for record in summary.fault_rows:
        lines = read_rows(root / record.source_file)
        header, row = lines[0], lines[record.line - 1]
        image_id = record.sample_id.split(":", 1)[1]
        assert image_id in row, record
        assert (len(row) != len(header)) == (record.kind == "malformed_row"), record
        if record.kind != "malformed_row":
            values = dict(zip(header, row, strict=True))
        path = image_path(root, record.sample_id)
        if record.kind == "missing_image":
            assert not path.exists()
        elif record.kind == "corrupt_image":
            with pytest.raises(OSError):
                Image.open(path)
        elif record.kind == "truncated_image":
            with Image.open(path) as image, pytest.raises(OSError, match="truncated"):
                image.load()
        elif record.kind == "empty_label":
            label_columns = ("label", "disease", "diagnosis_3")
            label_columns += ("hierarchical_disease_label",)
            assert [values[c] for c in label_columns if c in values] == [""]
        elif record.kind == "invalid_fitzpatrick":
            assert values.get("fitzpatrick_scale", values.get("skin_tone")) in (
                "9",
                "78",
            )
        elif record.kind == "wrongly_labelled":
            assert values["qc"] == "3 Wrongly labelled"
        elif record.kind == "dermoscopic_isic":
            assert values["image_type"] == "dermoscopic"
        elif record.kind == "dermoscopy_mention":
            assert re.search(r"dermoscop|dermatoscop", values["caption"], re.I)
    assert summary.faults["missing_image"] == tuple(
        r.sample_id for r in summary.fault_rows if r.kind == "missing_image"
    )


def test_clean_images_decode_in_the_real_formats(small, truth):
    root, _ = small
    clean = truth[truth["fault"].isin(["", "wrongly_labelled", "invalid_fitzpatrick"])]
    assert len(clean) > SMALL.n_samples
    for sample_id in clean.index:
        path = image_path(root, sample_id)
        with Image.open(path) as image:
            image.load()
            assert image.size == (SMALL.image_size, SMALL.image_size)
            png = sample_id.startswith(("ddi:", "scin:"))
            assert image.format == ("PNG" if png else "JPEG"), sample_id


def test_conditions_are_balanced_and_span_skin_types(small, truth):
    _, summary = small
    per_condition = summary.condition_counts()
    assert set(per_condition) == set(CONDITIONS)
    assert max(per_condition.values()) - min(per_condition.values()) <= 1
    assert set(truth["fitzpatrick"].astype(int)) == {1, 2, 3, 4, 5, 6}


def test_recorded_fitzpatrick_matches_the_background(small, truth):
    root, _ = small
    fitz = read_table(root / METADATA["fitzpatrick17k"])
    for md5, scale in zip(fitz["md5hash"], fitz["fitzpatrick_scale"], strict=True):
        if scale not in ("-1", "9"):
            assert truth.loc[f"fitzpatrick17k:{md5}", "fitzpatrick"] == scale
    ddi = read_table(root / METADATA["ddi"])
    pairs = {"12": ("1", "2"), "34": ("3", "4"), "56": ("5", "6")}
    for name, tone in zip(ddi["DDI_file"], ddi["skin_tone"], strict=True):
        if tone != "78":
            assert truth.loc[f"ddi:{name}", "fitzpatrick"] in pairs[tone]
    scin = read_table(root / METADATA["scin"])
    for _, case in scin.iterrows():
        if case["fitzpatrick_skin_type"]:
            expected = case["fitzpatrick_skin_type"].removeprefix("FST")
            assert truth.loc[f"scin:{case['image_1_path']}", "fitzpatrick"] == expected


def test_scin_labels_are_python_literals_led_by_the_condition(small):
    root, _ = small
    labels = read_table(root / "scin/scin_labels.csv")
    cases = read_table(root / METADATA["scin"])
    assert sorted(labels["case_id"]) == sorted(cases["case_id"])
    for _, row in labels.iterrows():
        names = ast.literal_eval(row["dermatologist_skin_condition_on_label_name"])
        weights = ast.literal_eval(row["weighted_skin_condition_label"])
        confidence = ast.literal_eval(row["dermatologist_skin_condition_confidence"])
        assert list(weights) == names and len(confidence) == len(names)
        assert max(weights.values()) == weights[names[0]]
        assert names[0] in {
            "Eczema",
            "Psoriasis",
            "Acne",
            "Urticaria",
            "Tinea",
            "Vitiligo",
        }
    n_images = (
        cases[["image_1_path", "image_2_path", "image_3_path"]].ne("").sum(axis=1)
    )
    assert n_images.between(1, 3).all() and (n_images > 1).any()


def test_isic_has_several_images_per_lesion_and_patient(small):
    root, _ = small
    isic = read_table(root / METADATA["isic"])
    assert isic["lesion_id"].value_counts().max() > 1
    lesions_per_patient = isic.groupby("patient_id")["lesion_id"].nunique()
    assert lesions_per_patient.max() > 1


def test_leak_fraction_is_honoured_and_only_leaks_name_labels(tmp_path):
    config = SynthConfig(n_samples=200, image_size=32, leak_fraction=0.4, seed=1)
    summary = generate(tmp_path / "data", config)
    derm1m = read_table(tmp_path / "data" / METADATA["derm1m"])
    skincap = read_table(tmp_path / "data/skincap/skincap.csv")
    texts = {
        f"derm1m:{f}": c
        for f, c in zip(derm1m["filename"], derm1m["caption"], strict=True)
    }
    truth = read_table(tmp_path / "data/synthetic_truth.csv").set_index("sample_id")
    clean_derm1m = [s for s in texts if truth.loc[s, "fault"] == ""]
    n_texts = len(clean_derm1m) + len(skincap)
    leaked = set(summary.leaked_sample_ids)
    assert abs(len(leaked) / n_texts - 0.4) < 0.05
    sentence_format = re.compile(r"[^.]+\.( [^.]+\.)*")
    for sample_id in clean_derm1m:
        caption = texts[sample_id]
        assert sentence_format.fullmatch(caption), caption
        assert bool(LABEL_WORDS.search(caption)) == (sample_id in leaked), caption
    for caption in skincap["caption_zh_polish_en"]:
        assert sentence_format.fullmatch(caption), caption

    none = generate(tmp_path / "none", SynthConfig(n_samples=60, leak_fraction=0.0))
    assert none.leaked_sample_ids == ()
    captions = read_table(tmp_path / "none" / METADATA["derm1m"])["caption"]
    assert not captions.str.contains(LABEL_WORDS).any()


def test_zero_fault_counts_give_clean_data(tmp_path):
    counts = {f: 0 for f in SynthConfig.__dataclass_fields__ if f.startswith("n_")}
    config = SynthConfig(**{**counts, "n_samples": 40, "image_size": 32})
    summary = generate(tmp_path / "clean", config)
    assert summary.fault_rows == () and all(v == () for v in summary.faults.values())
    for relative in METADATA.values():
        rows = read_rows(tmp_path / "clean" / relative)
        assert {len(r) for r in rows} == {len(rows[0])}, relative
    truth = read_table(tmp_path / "clean/synthetic_truth.csv")
    assert len(truth) == 40 and (truth["fault"] == "").all()


def test_regenerating_replaces_output_but_never_foreign_data(tmp_path):
    root = tmp_path / "data"
    generate(root, SynthConfig(n_samples=30, image_size=32))
    (root / "manifest.parquet").write_text("kept")
    summary = generate(root, SynthConfig(n_samples=20, image_size=32, seed=5))
    assert read_summary(root) == summary
    assert (root / "manifest.parquet").read_text() == "kept"
    assert len(read_rows(root / "synthetic_truth.csv")) - 1 == 20 + len(
        summary.fault_rows
    )

    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "fitzpatrick17k.csv").write_text("md5hash\n")
    with pytest.raises(ConfigError, match="not empty"):
        generate(foreign, SynthConfig(n_samples=10))


def test_write_derm1m_csv_rows_columns_and_determinism(tmp_path):
    path = write_derm1m_csv(tmp_path / "a.csv", 2_000, seed=4)
    frame = read_table(path)
    assert list(frame.columns) == REAL_COLUMNS["derm1m/Derm1M.csv"]
    assert len(frame) == 2_000 and frame["filename"].is_unique
    origins = set(frame["filename"].str.split("/").str[0])
    assert origins == {"IIYI", "pubmed", "youtube", "edu"}
    assert frame["hierarchical_disease_label"].str.contains(">").all()
    assert frame["caption"].str.endswith(".").all()
    assert 0.3 < frame["caption"].str.contains(LABEL_WORDS).mean() < 0.4
    again = write_derm1m_csv(tmp_path / "b.csv", 2_000, seed=4)
    assert sha256_file(path) == sha256_file(again)
    empty = write_derm1m_csv(tmp_path / "empty.csv", 0)
    assert empty.read_text() == ",".join(REAL_COLUMNS["derm1m/Derm1M.csv"]) + "\n"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_samples", 0),
        ("n_samples", -3),
        ("n_samples", 2.5),
        ("image_size", 8),
        ("image_size", 4096),
        ("leak_fraction", 1.5),
        ("text_noise", -0.1),
        ("skincap_fraction", 2),
        ("n_corrupt_images", -1),
        ("dataset_shares", {"fitzpatrick17k": 0.5, "isic": 0.2}),
        ("dataset_shares", {"fitzpatrick17k": 1.0, "mnist": 0.0}),
        ("image_format_mix", {"fitzpatrick17k": 0.5}),
        ("image_format_mix", {"ddi": 1.2}),
    ],
)
def test_bad_config_values_raise_config_error_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name):
        SynthConfig(**{name: value})


def test_write_derm1m_csv_rejects_negative_rows(tmp_path):
    with pytest.raises(ConfigError, match="n_rows"):
        write_derm1m_csv(tmp_path / "x.csv", -1)
