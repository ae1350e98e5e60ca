"""The packaged taxonomy (mlkit/data/taxonomy.yaml) against real source labels.

tests/data/raw-labels.txt lists about 400 condition labels exactly as Fitzpatrick17k,
DDI, ISIC and Derm1M spell them; every one must resolve to a canonical label or be
deliberately excluded with a reason.
"""

from pathlib import Path

import pytest

from mlkit.data.harmonize import Taxonomy, normalize_label

RAW_LABELS = Path(__file__).resolve().parents[2] / "data" / "raw-labels.txt"

# The spellings the synthetic demo data uses, with the label each must reach.
DEMO_SPELLINGS = {
    "melanoma": [
        "malignant melanoma",
        "superficial spreading melanoma ssm",
        "melanoma-in-situ",
        "nodular-melanoma-(nm)",
        "Melanoma Invasive",
        "Melanoma in situ",
        "Melanoma, NOS",
        "melanoma",
    ],
    "melanocytic nevus": [
        "nevocytic nevus",
        "congenital nevus",
        "melanocytic-nevi",
        "dysplastic-nevus",
        "Nevus",
    ],
    "psoriasis": ["psoriasis", "pustular psoriasis", "scalp psoriasis", "Psoriasis"],
    "acne": ["acne vulgaris", "acne", "acne-cystic", "Acne"],
    "eczema": [
        "eczema",
        "nummular eczema",
        "eczema-spongiotic-dermatitis",
        "dyshidrotic eczema",
        "xerotic eczema",
        "Eczema",
    ],
    "basal cell carcinoma": [
        "basal cell carcinoma",
        "basal-cell-carcinoma-nodular",
        "Basal cell carcinoma",
        "basal cell carcinoma morpheiform",
        "solid cystic basal cell carcinoma",
    ],
    "seborrheic keratosis": [
        "seborrheic keratosis",
        "seborrheic-keratosis-irritated",
        "Seborrheic keratosis",
        "seborrheic keratoses",
    ],
    "vitiligo": ["vitiligo", "Vitiligo"],
    "urticaria": ["urticaria", "hives", "Urticaria"],
    "tinea": ["tinea corporis", "tinea", "tinea cruris", "Tinea"],
}


@pytest.fixture(scope="module")
def taxonomy():
    return Taxonomy.load()


def raw_labels():
    lines = RAW_LABELS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_raw_label_list_is_the_full_reference():
    labels = raw_labels()
    assert len(labels) == 404
    assert len(set(labels)) == len(labels)


def test_every_raw_label_resolves_or_is_deliberately_excluded(taxonomy):
    unresolved = [
        raw for raw in raw_labels() if taxonomy.lookup(raw).kind == "unmapped"
    ]
    assert unresolved == []


def test_exclusions_carry_reasons(taxonomy):
    excluded = [raw for raw in raw_labels() if taxonomy.lookup(raw).kind == "excluded"]
    for raw in excluded:
        assert len(taxonomy.lookup(raw).reason) > 10, raw
    # Exclusion is for labels that are not conditions, not a way to skip work.
    assert len(excluded) < 0.05 * len(raw_labels())


@pytest.mark.parametrize("label", sorted(DEMO_SPELLINGS))
def test_demo_spellings_reach_their_canonical_label(taxonomy, label):
    assert label in taxonomy.labels
    for raw in DEMO_SPELLINGS[label]:
        assert taxonomy.resolve(raw) == label, raw


def test_distinct_look_alikes_stay_apart(taxonomy):
    assert taxonomy.resolve("urticaria pigmentosa") != "urticaria"
    assert taxonomy.resolve("tinea versicolor") != "tinea"
    assert taxonomy.resolve("pyogenic granuloma") != taxonomy.resolve(
        "granuloma annulare"
    )


def test_every_canonical_label_is_normalized_and_categorized(taxonomy):
    for label in taxonomy.labels:
        assert normalize_label(label) == label
        assert taxonomy.category(label)


def test_merges_form_chains(taxonomy):
    # At least one merge goes through another merged label, so resolution must
    # follow maps_to to its fixed point.
    chained = [
        name for name, target in taxonomy.maps_to.items() if target in taxonomy.maps_to
    ]
    assert chained
