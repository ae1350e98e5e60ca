import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlkit.data.harmonize import Taxonomy
from mlkit.data.leakage import RULES, filter_leakage, split_sentences
from mlkit.errors import ConfigError

TAX = Taxonomy.from_dict(
    {
        "version": "t",
        "labels": {
            "psoriasis": {"category": "inflammatory", "synonyms": ["plaque psoriasis"]},
            "melanoma": {"category": "malignant", "synonyms": ["malignant melanoma"]},
            "melanoma in situ": {"category": "malignant", "maps_to": "melanoma"},
            "urticaria": {"category": "inflammatory", "synonyms": ["hives"]},
            "cafe au lait macule": {"category": "pigmentary"},
        },
    }
)


def run(texts, labels, **kwargs):
    out, report = filter_leakage(pd.Series(texts), pd.Series(labels), TAX, **kwargs)
    return out.tolist(), report


def test_split_sentences_collapses_whitespace_and_skips_empty():
    sentences, parents = split_sentences(pd.Series(["A b.  C d!\nE?", "", None, "x"]))
    assert sentences.to_pylist() == ["A b.", "C d!", "E?", "x"]
    assert parents.tolist() == [0, 0, 0, 3]


@pytest.mark.parametrize(
    ("text", "label", "expected", "rule"),
    [
        (
            "Itchy plaques on elbows. Biopsy showed Plaque-Psoriasis.",
            "psoriasis",
            "Itchy plaques on elbows.",
            "label_mention",
        ),
        (
            "Raised welts. Looks like HIVES to me.",
            "urticaria",
            "Raised welts.",
            "label_mention",
        ),
        (
            "Dark spot. Known melanoma in situ.",
            "melanoma",
            "Dark spot.",
            "label_mention",
        ),
        (
            "Café-au-lait macule on the back. Flat.",
            "cafe au lait macule",
            "Flat.",
            "label_mention",
        ),
        (
            "On the arm. He was diagnosed last year.",
            "melanoma",
            "On the arm.",
            "diagnosis_statement",
        ),
        (
            "Red rash. Findings are consistent with a reaction.",
            "urticaria",
            "Red rash.",
            "hedged_diagnosis",
        ),
        ("Scaly. Most likely benign.", "psoriasis", "Scaly.", "hedged_diagnosis"),
        (
            "A mole. Histopathology was reviewed.",
            "melanoma",
            "A mole.",
            "pathology_result",
        ),
    ],
)
def test_each_rule_removes_its_sentence(text, label, expected, rule):
    out, report = run([text], [label])
    assert out == [expected]
    assert report.removed_by_rule[rule] == 1
    assert report.sentences_removed == 1
    assert report.examples["rule"].tolist() == [rule]


def test_symptoms_site_duration_and_demographics_are_kept():
    text = (
        "Female, 42 years old. Itching and burning for two weeks. "
        "Located on the left forearm. It has grown slowly."
    )
    out, report = run([text], ["psoriasis"])
    assert out == [text]
    assert report.sentences_removed == 0


def test_only_the_rows_own_label_counts_as_a_mention():
    # Naming another condition is history, not leakage of this row's label.
    out, _ = run(["History of psoriasis. New dark spot."], ["melanoma"])
    assert out == ["History of psoriasis. New dark spot."]


def test_word_boundaries_prevent_partial_matches():
    out, _ = run(["Patient hivesque texture. Melanomas elsewhere."], ["urticaria"])
    assert out == ["Patient hivesque texture. Melanomas elsewhere."]


def test_first_matching_rule_takes_the_count():
    _, report = run(["Biopsy showed melanoma."], ["melanoma"])
    assert report.removed_by_rule == {
        "label_mention": 1,
        "diagnosis_statement": 0,
        "hedged_diagnosis": 0,
        "pathology_result": 0,
    }


def test_rules_can_be_selected_and_unknown_rules_fail():
    out, report = run(
        ["Biopsy showed melanoma. Dark."], ["melanoma"], rules=["hedged_diagnosis"]
    )
    assert out == ["Biopsy showed melanoma. Dark."]
    assert report.rules == ("hedged_diagnosis",)
    with pytest.raises(ConfigError, match="unknown leakage rule"):
        run(["x"], ["melanoma"], rules=["bogus"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="rows"):
        filter_leakage(pd.Series(["a"]), pd.Series(["a", "b"]), TAX)


def test_index_is_preserved_and_nulls_become_empty():
    texts = pd.Series(["Dx: psoriasis. Red.", None], index=[10, 20])
    out, report = filter_leakage(
        texts, pd.Series(["psoriasis", "psoriasis"], index=[10, 20]), TAX
    )
    assert out.index.tolist() == [10, 20]
    assert out.tolist() == ["Red.", ""]
    assert report.examples["row"].tolist() == [10]
    assert report.table()["rule"].tolist() == list(RULES)


def test_empty_input():
    out, report = run([], [])
    assert out == [] and report.sentences_total == 0


words = st.sampled_from(
    [
        "itchy",
        "red",
        "psoriasis",
        "melanoma",
        "hives",
        "biopsy",
        "consistent",
        "with",
        "arm",
        "weeks",
        "diagnosed",
        "most",
        "likely",
        "café",
        "plaque",
        "42",
    ]
)
sentence = st.builds(
    lambda ws, end: " ".join(ws) + end,
    st.lists(words, min_size=1, max_size=6),
    st.sampled_from([".", "!", "?", ""]),
)
texts = st.lists(sentence, max_size=5).map(lambda ss: "  ".join(ss))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(texts, st.sampled_from(["psoriasis", "melanoma", "urticaria"])),
        max_size=8,
    )
)
def test_filter_is_idempotent_and_never_adds_text(rows):
    texts_, labels = [r[0] for r in rows], [r[1] for r in rows]
    once, first = run(texts_, labels)
    twice, second = run(once, labels)
    assert twice == once
    assert second.sentences_removed == 0
    for before, after in zip(texts_, once, strict=True):
        assert len(after) <= len(" ".join(before.split()))


def test_chunked_arrow_input_is_handled():
    # Readers hand over text backed by several Arrow chunks on large files.
    import pyarrow as pa

    chunked = pa.chunked_array([["Dx: psoriasis. Red."], ["Itchy. Most likely hives."]])
    text = pd.Series(pd.arrays.ArrowStringArray(chunked))
    out, report = filter_leakage(text, pd.Series(["psoriasis", "urticaria"]), TAX)
    assert out.tolist() == ["Red.", "Itchy."]
    assert report.sentences_removed == 2


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list("aZ9 .,'`-_\t!é’xYs")), max_size=12),
        max_size=6,
    )
)
def test_matchable_text_is_normalized_text_up_to_separators(values):
    import re

    import pyarrow as pa

    from mlkit.data.harmonize import normalize_label
    from mlkit.data.leakage import _matchable

    out = _matchable(pa.array(values, type=pa.large_string())).to_pylist()
    collapsed = [re.sub("[^a-z0-9]+", " ", text).strip() for text in out]
    assert collapsed == [normalize_label(v) for v in values]


def test_result_does_not_depend_on_chunking_or_threads():
    texts = [
        "Itchy. Biopsy showed psoriasis.",
        "Dark. Consistent with melanoma.",
        None,
        "Hives on arms. Red.",
        "Plain text.",
    ] * 7
    labels = ["psoriasis", "melanoma", "psoriasis", "urticaria", "melanoma"] * 7
    whole, report = run(texts, labels)
    out, chunked = filter_leakage(
        pd.Series(texts), pd.Series(labels), TAX, chunk_rows=3, workers=2
    )
    assert out.tolist() == whole
    assert chunked.removed_by_rule == report.removed_by_rule
    assert chunked.examples.equals(report.examples)


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab c_-'`.,Ä9")), max_size=16),
    st.sampled_from(["a", "b c", "ab", "c 9", "a b"]),
)
def test_flexible_patterns_on_matchable_text_match_as_on_normalized_text(text, term):
    import re

    import pyarrow as pa

    from mlkit.data.harmonize import normalize_label
    from mlkit.data.leakage import _matchable, _term_pattern

    plain = r"\b" + re.escape(term).replace("\\ ", " ") + r"\b"
    expected = re.search(plain, normalize_label(text)) is not None
    matchable = _matchable(pa.array([text], type=pa.large_string()))[0].as_py()
    assert (re.search(_term_pattern([term]), matchable) is not None) == expected
