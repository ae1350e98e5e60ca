"""Remove sentences that give the diagnosis away from image descriptions.

A description may say what the patient feels and where (symptoms, duration, body
site, demographics) but not what the condition is. A sentence is removed when a
rule matches it:

- ``label_mention``: it names the row's diagnosis or one of its synonyms;
- ``diagnosis_statement``: it states a diagnosis ("diagnosed with", "the
  diagnosis was", "diagnostic of");
- ``hedged_diagnosis``: it suggests one ("consistent with", "suggestive of",
  "most likely", "compatible with", "in keeping with", "characteristic of");
- ``pathology_result``: it reports a biopsy or histopathology result.

Each removed sentence is counted once, under the first rule (in that order)
that matches it. The filter is vectorized with Arrow compute over all sentences
at once, deterministic, and idempotent: filtering its own output changes
nothing, because kept sentences are re-joined with single spaces exactly as
they were split.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlkit.data.harmonize import Taxonomy, normalize_label
from mlkit.data.schema import STRING
from mlkit.errors import ConfigError

log = logging.getLogger(__name__)

# Patterns run on the normalized sentence: lower case, apostrophes deleted and
# every other run of non-alphanumerics turned into one space (as for labels).
PHRASE_RULES: dict[str, str] = {
    "diagnosis_statement": (
        r"\b(?:diagnos(?:ed|is|es|tic|ing|e)|dx|"
        r"confirmed (?:as|to be|case)|known case of|a case of)\b"
    ),
    "hedged_diagnosis": (
        r"\b(?:consistent with|suggestive of|suggests|suggesting|compatible with|"
        r"in keeping with|characteristic of|typical of|indicative of|"
        r"pathognomonic|most likely|likely represents?|probable|presumed|"
        r"differential includes|impression)\b"
    ),
    "pathology_result": (
        r"\b(?:biops(?:y|ies|ied)|histolog\w*|histopatholog\w*|"
        r"dermatopatholog\w*|pathology (?:report|showed|revealed|confirmed)|"
        r"immunohistochem\w*)\b"
    ),
}

RULES: tuple[str, ...] = ("label_mention", *PHRASE_RULES)

_SENTENCE_BREAK = r"([.!?]) +"
_SEP = "\x1f"  # a control character that never appears in descriptions


@dataclass
class LeakageReport:
    """Counts and examples of what the filter removed."""

    rules: tuple[str, ...]
    sentences_total: int
    sentences_removed: int
    removed_by_rule: dict[str, int]
    rows_changed: int
    examples: pd.DataFrame  # row, label, rule, before, after

    def table(self) -> pd.DataFrame:
        """Removed sentences per rule, in rule order, for reports."""
        return pd.DataFrame(
            {
                "rule": list(self.removed_by_rule),
                "sentences_removed": list(self.removed_by_rule.values()),
            }
        )


def _normalize_text(values: pa.Array) -> pa.Array:
    """Normalize sentences for matching, as ``normalize_label`` does labels."""
    is_ascii = pc.string_is_ascii(values).to_numpy(zero_copy_only=False)
    if not is_ascii.all():
        # Accent folding needs Unicode decomposition, which Arrow lacks; it runs
        # in Python only on the (rare) non-ASCII sentences.
        py = values.to_pylist()
        for i in np.flatnonzero(~is_ascii):
            decomposed = unicodedata.normalize("NFKD", py[i])
            py[i] = decomposed.encode("ascii", "ignore").decode("ascii")
        values = pa.array(py, type=pa.string())
    lowered = pc.utf8_lower(values)
    no_apostrophes = pc.replace_substring_regex(lowered, r"['\x{2019}`]", "")
    spaced = pc.replace_substring_regex(no_apostrophes, r"[^a-z0-9]+", " ")
    return pc.utf8_trim_whitespace(spaced)


def _term_pattern(terms: Sequence[str]) -> str:
    # Longest first so that alternation prefers the most specific spelling.
    ordered = sorted({t for t in terms if t}, key=lambda t: (-len(t), t))
    return r"\b(?:" + "|".join(re.escape(t) for t in ordered) + r")\b"


def split_sentences(text: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """Split texts into sentences: (flat sentences, index of their row).

    Whitespace runs are collapsed first; a sentence ends at ``.``, ``!`` or
    ``?`` followed by a space. Rows with null or empty text give no sentences.
    """
    arr = pa.array(text.astype(STRING).fillna(""), type=pa.string())
    squashed = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s+", " "))
    marked = pc.replace_substring_regex(squashed, _SENTENCE_BREAK, "\\1" + _SEP)
    lists = pc.split_pattern(marked, _SEP)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    nonempty = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    return flat.filter(pa.array(nonempty)), parents[nonempty]


def filter_leakage(
    text: pd.Series,
    labels: pd.Series,
    taxonomy: Taxonomy,
    *,
    rules: Sequence[str] | None = None,
    n_examples: int = 10,
) -> tuple[pd.Series, LeakageReport]:
    """Return ``text`` without leaking sentences, and what was removed.

    ``labels`` holds each row's canonical label (aligned with ``text``); the
    ``label_mention`` rule looks for every spelling that the taxonomy resolves
    to that label, plus the label itself. ``rules`` picks a subset of
    :data:`RULES` (default: all).
    """
    active = tuple(RULES if rules is None else rules)
    unknown = [r for r in active if r not in RULES]
    if unknown:
        raise ConfigError(
            f"unknown leakage rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}"
        )
    if len(text) != len(labels):
        raise ValueError(f"text has {len(text)} rows but labels has {len(labels)}")

    sentences, parents = split_sentences(text)
    n_sentences = len(sentences)
    normalized = _normalize_text(sentences)

    # rule_hit[i] = index (in `active`) of the first rule matching sentence i,
    # or len(active) if none matches.
    rule_hit = np.full(n_sentences, len(active), dtype=np.int16)
    for position in range(len(active) - 1, -1, -1):
        rule = active[position]
        if rule == "label_mention":
            hit = _label_mentions(normalized, parents, labels, taxonomy)
        else:
            hit = pc.match_substring_regex(normalized, PHRASE_RULES[rule])
            hit = hit.to_numpy(zero_copy_only=False)
        rule_hit[hit] = position

    keep = rule_hit == len(active)
    kept_parents = parents[keep]
    counts = np.bincount(kept_parents, minlength=len(text))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(offsets), sentences.filter(pa.array(keep)))
    joined = pc.binary_join(kept, " ")
    out = pd.Series(
        joined.to_numpy(zero_copy_only=False), index=text.index, dtype=STRING
    ).fillna("")

    removed_by_rule = {
        rule: int(np.count_nonzero(rule_hit == i)) for i, rule in enumerate(active)
    }
    changed_rows = np.unique(parents[~keep])
    examples = _examples(text, out, labels, parents, rule_hit, active, n_examples)
    report = LeakageReport(
        rules=active,
        sentences_total=n_sentences,
        sentences_removed=int(np.count_nonzero(~keep)),
        removed_by_rule=removed_by_rule,
        rows_changed=len(changed_rows),
        examples=examples,
    )
    log.info(
        "leakage filter: removed %s of %s sentences in %s rows (%s)",
        report.sentences_removed,
        n_sentences,
        report.rows_changed,
        ", ".join(f"{k}={v}" for k, v in removed_by_rule.items()),
    )
    return out, report


def _label_mentions(
    normalized: pa.Array,
    parents: np.ndarray,
    labels: pd.Series,
    taxonomy: Taxonomy,
) -> np.ndarray:
    """Mask of sentences that name their own row's label.

    Sentences are sorted by label so each label's pattern runs once over one
    contiguous slice: the work stays linear in the number of sentences.
    """
    hit = np.zeros(len(normalized), dtype=bool)
    if len(normalized) == 0:
        return hit
    codes, uniques = pd.factorize(labels.astype(STRING), use_na_sentinel=True)
    sentence_codes = codes[parents]
    order = np.argsort(sentence_codes, kind="stable")
    sorted_codes = sentence_codes[order]
    bounds = np.searchsorted(sorted_codes, np.arange(len(uniques) + 1))
    for code, label in enumerate(uniques):
        start, stop = bounds[code], bounds[code + 1]
        if start == stop:
            continue
        terms = taxonomy.terms(label) + (normalize_label(label),)
        idx = order[start:stop]
        chunk = normalized.take(pa.array(idx))
        matches = pc.match_substring_regex(chunk, _term_pattern(terms))
        hit[idx] = matches.to_numpy(zero_copy_only=False)
    return hit


def _examples(
    before: pd.Series,
    after: pd.Series,
    labels: pd.Series,
    parents: np.ndarray,
    rule_hit: np.ndarray,
    active: tuple[str, ...],
    limit: int,
) -> pd.DataFrame:
    """The first ``limit`` changed rows, with the first rule that fired."""
    columns = ["row", "label", "rule", "before", "after"]
    removed = np.flatnonzero(rule_hit < len(active))
    if limit <= 0 or len(removed) == 0:
        return pd.DataFrame(columns=columns)
    rows, first = np.unique(parents[removed], return_index=True)
    rows, first = rows[:limit], first[:limit]
    positions = before.index[rows]
    return pd.DataFrame(
        {
            "row": positions,
            "label": labels.iloc[rows].to_numpy(),
            "rule": [active[rule_hit[removed[i]]] for i in first],
            "before": before.iloc[rows].to_numpy(),
            "after": after.iloc[rows].to_numpy(),
        },
        columns=columns,
    )
