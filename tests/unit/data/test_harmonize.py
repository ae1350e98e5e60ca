import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlkit.data.harmonize import Taxonomy, drop_rare_labels, harmonize, normalize_label
from mlkit.errors import ConfigError, DataError

SMALL = {
    "version": "test-1",
    "labels": {
        "melanoma": {"category": "malignant", "synonyms": ["malignant melanoma"]},
        "melanoma in situ": {
            "category": "malignant",
            "maps_to": "lentigo maligna",
            "synonyms": ["Melanoma-in-situ", "MIS"],
        },
        "lentigo maligna": {"category": "malignant", "maps_to": "melanoma"},
        "eczema": {"category": "inflammatory", "synonyms": ["Nummular eczema"]},
        "cafe au lait macule": {"category": "pigmentary"},
    },
    "excluded": {"Hereditary": "names a mode of inheritance, not a condition"},
}


@pytest.fixture
def tax():
    return Taxonomy.from_dict(SMALL)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Melanoma, NOS", "melanoma nos"),
        ("nodular-melanoma-(nm)", "nodular melanoma nm"),
        ("beau's lines", "beaus lines"),
        ("Café au lait macule", "cafe au lait macule"),
        ("  wound/abrasion ", "wound abrasion"),
        (
            "actinic solar damage(solar elastosis)",
            "actinic solar damage solar elastosis",
        ),
    ],
)
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize_label(text)
    assert normalize_label(once) == once


def test_maps_to_is_followed_to_a_fixed_point(tax):
    # melanoma in situ -> lentigo maligna -> melanoma: a chain of two merges.
    assert tax.resolve("melanoma-in-situ") == "melanoma"
    assert tax.resolve("MIS") == "melanoma"
    assert tax.resolve("Lentigo Maligna") == "melanoma"
    assert tax.labels == ["cafe au lait macule", "eczema", "melanoma"]


def test_lookup_kinds(tax):
    assert tax.lookup("NUMMULAR ECZEMA").label == "eczema"
    excluded = tax.lookup("hereditary")
    assert (excluded.kind, excluded.label) == ("excluded", None)
    assert "inheritance" in excluded.reason
    assert tax.lookup("psoriasis").kind == "unmapped"


def test_terms_cover_every_spelling_that_resolves_to_a_label(tax):
    terms = set(tax.terms("melanoma"))
    assert {"melanoma", "malignant melanoma", "melanoma in situ", "mis"} <= terms
    assert "lentigo maligna" in terms
    assert tax.terms("not a label") == ("not a label",)


def test_cycle_is_rejected():
    data = {
        "version": "x",
        "labels": {
            "a": {"category": "other", "maps_to": "b"},
            "b": {"category": "other", "maps_to": "a"},
        },
    }
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        Taxonomy.from_dict(data)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"a": {"category": "x", "maps_to": "nowhere"}}, "unknown label 'nowhere'"),
        ({"A b": {"category": "x"}}, "not in normal form"),
        (
            {
                "a": {"category": "x", "synonyms": ["z"]},
                "b": {"category": "x", "synonyms": ["Z"]},
            },
            "already belongs to label 'a'",
        ),
        ({"a": {"category": "x", "colour": "red"}}, "invalid taxonomy"),
    ],
)
def test_invalid_taxonomies_are_rejected(labels, message):
    with pytest.raises(ConfigError, match=message):
        Taxonomy.from_dict({"version": "x", "labels": labels})


def test_excluded_spelling_cannot_also_be_mapped():
    data = {
        "version": "x",
        "labels": {"scar": {"category": "x"}},
        "excluded": {"Scar": "r"},
    }
    with pytest.raises(ConfigError, match="both excluded and a spelling"):
        Taxonomy.from_dict(data)


def test_load_from_path_and_errors(tmp_path):
    path = tmp_path / "tax.yaml"
    path.write_text("version: '2'\nlabels:\n  acne: {category: inflammatory}\n")
    assert Taxonomy.load(path).resolve("ACNE") == "acne"
    with pytest.raises(ConfigError, match="not found"):
        Taxonomy.load(tmp_path / "missing.yaml")
    path.write_text("version: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Taxonomy.load(path)


def test_overrides_win_and_resolve_through_the_taxonomy(tax):
    over = tax.with_overrides({"Atopic dermatitis": "nummular eczema", "mis": "eczema"})
    assert over.resolve("atopic-dermatitis") == "eczema"
    assert over.resolve("MIS") == "eczema"
    assert tax.resolve("MIS") == "melanoma"  # the original is unchanged
    with pytest.raises(ConfigError, match="cycle"):
        tax.with_overrides({"x": "y", "y": "x"})
    with pytest.raises(ConfigError, match="empty source spelling"):
        tax.with_overrides({"--": "eczema"})


def _frame(labels):
    n = len(labels)
    return pd.DataFrame(
        {
            "sample_id": [f"d:{i}" for i in range(n)],
            "dataset": ["d"] * n,
            "raw_label": labels,
        }
    )


def test_harmonize_maps_drops_and_reports(tax):
    frame = _frame(
        ["Malignant Melanoma", "MIS", "psoriasis", "hereditary", None, "eczema"]
    )
    out, report = harmonize(frame, tax)
    assert out["label"].tolist() == ["melanoma", "melanoma", "eczema"]
    assert out["sample_id"].tolist() == ["d:0", "d:1", "d:5"]
    assert report.n_unmapped == 2  # psoriasis and the null label
    assert report.n_excluded == 1
    assert report.unmapped["kept"].eq(False).all()
    assert set(report.counts_before["raw_label"].dropna()) >= {"MIS", "psoriasis"}


def test_harmonize_keeps_unmapped_under_normalized_spelling(tax):
    out, report = harmonize(
        _frame(["Psoriasis ", "eczema", None]), tax, keep_unmapped=True
    )
    assert out["label"].tolist() == ["psoriasis", "eczema"]
    assert report.unmapped["kept"].all()


def test_harmonize_needs_raw_label(tax):
    with pytest.raises(DataError, match="raw_label"):
        harmonize(pd.DataFrame({"dataset": ["d"]}), tax)


def test_drop_rare_labels():
    frame = pd.DataFrame({"label": ["a", "a", "a", "b", "c", "c"]})
    kept, dropped = drop_rare_labels(frame, 2)
    assert sorted(kept["label"].unique()) == ["a", "c"]
    assert dropped.to_dict(orient="records") == [{"label": "b", "count": 1}]
    with pytest.raises(ConfigError, match="min_samples_per_label"):
        drop_rare_labels(frame, 0)
