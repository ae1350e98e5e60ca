"""synth -> prepare -> manifest, with real files on disk and every stage."""

import pandas as pd
import pytest

from mlkit.data.harmonize import Taxonomy, normalize_label
from mlkit.data.manifest import read_card, read_manifest
from mlkit.data.prepare import PrepareConfig, prepare
from mlkit.data.split import check_splits
from mlkit.data.synthetic import FAULT_OUTCOMES


@pytest.fixture(scope="module")
def prepared(demo_data, tmp_path_factory):
    root, summary = demo_data
    out = tmp_path_factory.mktemp("prepared")
    config = PrepareConfig(data_root=root, out_dir=out, seed=3, workers=2)
    return prepare(config), summary, config


def test_every_clean_sample_reaches_the_manifest(prepared):
    result, summary, _ = prepared
    faulty = {record.sample_id for record in summary.fault_rows}
    assert len(result.manifest) == summary.n_clean
    assert not faulty & set(result.manifest["sample_id"])
    assert result.manifest["sample_id"].is_unique


def test_every_fault_is_quarantined_or_dropped_for_its_reason(prepared):
    result, summary, _ = prepared
    quarantine = result.quarantine
    for record in summary.fault_rows:
        expected = FAULT_OUTCOMES[record.kind]
        if expected == "dropped":
            continue
        by_id = quarantine[quarantine["sample_id"] == record.sample_id]
        by_line = quarantine[
            quarantine["source_file"].str.endswith(record.source_file.split("/")[-1])
            & (quarantine["line"] == record.line)
        ]
        reasons = set(by_id["reason"]) | set(by_line["reason"])
        assert expected in reasons, (record, reasons)
    dropped = sum(sum(d.values()) for d in result.dropped.values())
    expected_dropped = sum(
        1 for r in summary.fault_rows if FAULT_OUTCOMES[r.kind] == "dropped"
    )
    assert dropped == expected_dropped


def test_labels_are_the_canonical_demo_conditions(prepared):
    result, summary, _ = prepared
    assert set(result.manifest["label"]) == set(summary.condition_counts())


def test_splits_are_group_aware_and_cover_every_label(prepared):
    result, _, _ = prepared
    check_splits(result.manifest)
    assert set(result.manifest["split"]) == {"train", "val", "test"}
    for dataset, rows in result.manifest.groupby("dataset"):
        shares = rows["split"].value_counts(normalize=True)
        assert shares["train"] > 0.5, dataset


def test_leaking_sentences_are_gone(prepared):
    result, summary, _ = prepared
    taxonomy = Taxonomy.load()
    leaked = result.manifest[
        result.manifest["sample_id"].isin(summary.leaked_sample_ids)
    ]
    assert len(leaked) > 10
    assert result.leakage.sentences_removed >= len(leaked)
    for label, text in zip(leaked["label"], leaked["text"], strict=True):
        normalized = normalize_label(text)  # the filter matches on this form
        for term in taxonomy.terms(label):
            assert f" {term} " not in f" {normalized} ", (label, text)


def test_outputs_on_disk_agree(prepared):
    result, _, config = prepared
    manifest = read_manifest(config.out_dir)
    card = read_card(result.paths.card)
    assert card["synthetic"] is True
    assert card["rows"] == len(manifest) == len(result.manifest)
    assert sum(card["counts"]["split"].values()) == len(manifest)
    assert card["parameters"]["seed"] == 3
    assert (
        card["reports"]["leakage"]["sentences_removed"]
        == result.leakage.sentences_removed
    )
    quarantine = pd.read_csv(result.paths.quarantine)
    assert len(quarantine) == len(result.quarantine)


def test_prepare_is_deterministic(prepared, tmp_path):
    result, _, config = prepared
    again = prepare(config.model_copy(update={"out_dir": tmp_path}))
    assert again.card["manifest"]["sha256"] == result.card["manifest"]["sha256"]
    other_seed = prepare(
        config.model_copy(update={"out_dir": tmp_path / "s", "seed": 4})
    )
    assert not other_seed.manifest["split"].equals(result.manifest["split"])


def test_min_samples_and_source_selection(demo_data, tmp_path):
    root, _ = demo_data
    config = PrepareConfig(
        data_root=root,
        out_dir=tmp_path,
        sources=["isic"],
        min_samples_per_label=1000,
        image_check="header",
    )
    with pytest.raises(Exception, match="no rows left"):
        prepare(config)
    config = config.model_copy(update={"min_samples_per_label": 1})
    result = prepare(config)
    assert set(result.manifest["dataset"]) == {"isic"}
