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
that matches it. Matching is on the ``normalize_label`` form of a sentence
(accents folded, lower case, punctuation as separators), so spellings such as
"Plaque-Psoriasis" are caught. The filter works on whole columns with Arrow
kernels and numpy, in blocks of rows on all cores; it is deterministic and
idempotent: filtering its own output changes nothing, because kept sentences
are re-joined with single spaces exactly as they were split.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlkit.data.harmonize import Taxonomy, normalize_label
from mlkit.data.schema import STRING
from mlkit.errors import ConfigError

log = logging.getLogger(__name__)

# Patterns as they would run on the normalize_label form of a sentence: lower
# case, words joined by single spaces. `_flexible` adapts them to the cheaper
# `_matchable` form that the filter actually matches on.
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


def _fold_non_ascii(values: pa.Array) -> pa.Array:
    """Fold accents as ``normalize_label`` does (``café`` -> ``cafe``; other
    non-ASCII characters are dropped). Arrow has no Unicode decomposition, so
    only the strings that need it go through Python's ``unicodedata``."""
    non_ascii = pc.invert(pc.string_is_ascii(values))
    if not pc.any(non_ascii).as_py():
        return values
    folded = [
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        for text in pc.filter(values, non_ascii).to_pylist()
    ]
    return pc.replace_with_mask(
        values, non_ascii, pa.array(folded, type=pa.large_string())
    )


def _matchable(values: pa.Array) -> pa.Array:
    """A form of ``values`` on which the rules' patterns (see ``_flexible``)
    match exactly when the plain patterns match the ``normalize_label`` form:
    accents folded, lower case, apostrophes deleted. Separators are left as
    they are; the patterns treat any run of non-alphanumerics as one.
    """
    lowered = pc.ascii_lower(_fold_non_ascii(values.cast(pa.large_string())))
    quoted = pc.match_substring_regex(lowered, r"['`]")
    if pc.any(quoted).as_py():
        fixed = pc.replace_substring_regex(pc.filter(lowered, quoted), r"['`]", "")
        lowered = pc.replace_with_mask(lowered, quoted, fixed)
    return lowered


_SEPARATOR_RUN = "[^a-z0-9]+"


def _flexible(pattern: str) -> str:
    """Rewrite a pattern written for ``normalize_label`` text (words joined by
    single spaces, ``\\b`` at word edges) so that it matches ``_matchable``
    text: a space matches any run of separators, and word edges are explicit
    because ``\\b`` would treat "_" as a letter."""
    pattern = pattern.replace("\\ ", " ").replace("\\w", "[a-z0-9]")
    if pattern.startswith("\\b"):
        pattern = "(?:^|[^a-z0-9])" + pattern[2:]
    if pattern.endswith("\\b"):
        pattern = pattern[:-2] + "(?:[^a-z0-9]|$)"
    return pattern.replace(" ", _SEPARATOR_RUN)


_PHRASES = {rule: _flexible(pattern) for rule, pattern in PHRASE_RULES.items()}


def _term_pattern(terms: Sequence[str]) -> str:
    # Longest first so that alternation prefers the most specific spelling.
    ordered = sorted({t for t in terms if t}, key=lambda t: (-len(t), t))
    alternatives = "|".join(re.escape(t) for t in ordered)
    return _flexible(r"\b(?:" + alternatives + r")\b")


def _as_large_strings(text: pd.Series) -> pa.Array:
    arr = pa.array(text.astype(STRING).fillna(""))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    # 64-bit offsets: a million descriptions can exceed 2 GiB of text.
    return arr.cast(pa.large_string())


def _split(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    # Collapsing whitespace is a costly regex, so only rows that need it run it.
    messy = pc.fill_null(pc.match_substring_regex(arr, r"\s\s|[\t\n\r\f\v]"), False)
    if pc.any(messy).as_py():
        cleaned = pc.replace_substring_regex(pc.filter(arr, messy), r"\s+", " ")
        arr = pc.replace_with_mask(arr, messy, cleaned)
    arr = pc.utf8_trim_whitespace(arr)
    n = len(arr)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset :][: n + 1]
    if data_buf is None or offsets[-1] == offsets[0]:
        return pa.array([], type=pa.large_string()), np.array([], dtype=np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]

    # With single spaces and trimmed ends, a sentence break is a space right
    # after ".", "!" or "?", always inside one string. Sentences start at each
    # non-empty string's start and after each break; the break spaces go.
    head = data[:-1]
    ends = (head == ord(".")) | (head == ord("!")) | (head == ord("?"))
    breaks = np.flatnonzero(ends & (data[1:] == ord(" "))) + 1
    nonempty = offsets[:-1] < offsets[1:]
    starts = np.sort(np.concatenate([offsets[:-1][nonempty], breaks + 1]))
    parents = np.searchsorted(offsets, starts, side="right") - 1
    kept = np.ones(len(data), dtype=bool)
    kept[breaks] = False
    bounds = np.concatenate(
        [starts - np.searchsorted(breaks, starts), [len(data) - len(breaks)]]
    )
    sentences = pa.LargeStringArray.from_buffers(
        len(starts), pa.py_buffer(bounds.astype(np.int64)), pa.py_buffer(data[kept])
    )
    return sentences, parents


def split_sentences(text: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """Split texts into sentences: (flat sentences, index of their row).

    Whitespace runs are collapsed first; a sentence ends at ``.``, ``!`` or
    ``?`` followed by a space. Rows with null or empty text give no sentences.
    """
    return _split(_as_large_strings(text))


@dataclass
class _Chunk:
    text: pa.Array  # filtered descriptions
    parents: np.ndarray  # row (within the chunk) of every sentence
    rule_hit: np.ndarray  # first matching rule per sentence; len(rules) = none


def _filter_chunk(
    arr: pa.Array, codes: np.ndarray, patterns: list[str | None], rules: tuple[str, ...]
) -> _Chunk:
    """Filter one block of rows; ``codes`` index ``patterns`` (label terms)."""
    sentences, parents = _split(arr)
    normalized = _matchable(sentences)

    # rule_hit[i]: position in `rules` of the first rule matching sentence i.
    rule_hit = np.full(len(sentences), len(rules), dtype=np.int16)
    phrase_rules = [r for r in rules if r in PHRASE_RULES]
    if phrase_rules and len(normalized):
        # One pass with all phrase rules; only its hits are attributed per rule.
        combined = "|".join(f"(?:{_PHRASES[r]})" for r in phrase_rules)
        any_hit = pc.match_substring_regex(normalized, combined)
        candidates = np.flatnonzero(any_hit.to_numpy(zero_copy_only=False))
        subset = normalized.take(pa.array(candidates))
        for rule in reversed(phrase_rules):
            hit = pc.match_substring_regex(subset, _PHRASES[rule])
            rule_hit[candidates[hit.to_numpy(zero_copy_only=False)]] = rules.index(rule)
    if "label_mention" in rules:
        hit = _label_mentions(normalized, codes[parents], patterns)
        rule_hit[hit] = rules.index("label_mention")

    keep = rule_hit == len(rules)
    counts = np.bincount(parents[keep], minlength=len(arr))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    kept = pa.LargeListArray.from_arrays(
        pa.array(offsets), sentences.filter(pa.array(keep))
    )
    joined = pc.binary_join(kept, pa.scalar(" ", pa.large_string()))
    return _Chunk(joined, parents, rule_hit)


def filter_leakage(
    text: pd.Series,
    labels: pd.Series,
    taxonomy: Taxonomy,
    *,
    rules: Sequence[str] | None = None,
    n_examples: int = 10,
    chunk_rows: int = 100_000,
    workers: int | None = None,
) -> tuple[pd.Series, LeakageReport]:
    """Return ``text`` without leaking sentences, and what was removed.

    ``labels`` holds each row's canonical label (aligned with ``text``); the
    ``label_mention`` rule looks for every spelling that the taxonomy resolves
    to that label, plus the label itself. ``rules`` picks a subset of
    :data:`RULES` (default: all). Rows are filtered in blocks of
    ``chunk_rows`` on ``workers`` threads (default: one per CPU), which bounds
    memory and uses every core; the result does not depend on either.
    """
    active = tuple(RULES if rules is None else rules)
    unknown = [r for r in active if r not in RULES]
    if unknown:
        raise ConfigError(
            f"unknown leakage rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}"
        )
    if len(text) != len(labels):
        raise ValueError(f"text has {len(text)} rows but labels has {len(labels)}")

    codes, uniques = pd.factorize(labels.astype(STRING), use_na_sentinel=True)
    patterns = [
        _term_pattern(taxonomy.terms(label) + (normalize_label(label),))
        for label in uniques
    ]
    arr = _as_large_strings(text)
    starts = range(0, len(arr), max(1, chunk_rows))
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunks = list(
            pool.map(
                lambda a: _filter_chunk(
                    arr.slice(a, chunk_rows),
                    codes[a : a + chunk_rows],
                    patterns,
                    active,
                ),
                starts,
            )
        )

    joined = (
        pa.concat_arrays([c.text for c in chunks])
        if chunks
        else pa.array([], type=pa.large_string())
    )
    # pd.array wraps the Arrow data without converting it to Python strings.
    out = pd.Series(pd.array(joined, dtype=STRING), index=text.index).fillna("")
    parents = np.concatenate(
        [c.parents + a for c, a in zip(chunks, starts, strict=True)]
        or [np.array([], int)]
    ).astype(np.int64)
    rule_hit = np.concatenate([c.rule_hit for c in chunks] or [np.array([], np.int16)])

    removed = rule_hit < len(active)
    removed_by_rule = {
        rule: int(np.count_nonzero(rule_hit == i)) for i, rule in enumerate(active)
    }
    examples = _examples(text, out, labels, parents, rule_hit, active, n_examples)
    report = LeakageReport(
        rules=active,
        sentences_total=len(rule_hit),
        sentences_removed=int(np.count_nonzero(removed)),
        removed_by_rule=removed_by_rule,
        rows_changed=len(np.unique(parents[removed])),
        examples=examples,
    )
    log.info(
        "leakage filter: removed %s of %s sentences in %s rows (%s)",
        report.sentences_removed,
        report.sentences_total,
        report.rows_changed,
        ", ".join(f"{k}={v}" for k, v in removed_by_rule.items()),
    )
    return out, report


def _label_mentions(
    normalized: pa.Array, codes: np.ndarray, patterns: list[str]
) -> np.ndarray:
    """Mask of sentences that name their own row's label.

    ``codes`` gives each sentence's label as an index into ``patterns``.
    Sentences are sorted by label so that each label's pattern runs once over
    one contiguous slice: the work stays linear in the number of sentences.
    """
    hit = np.zeros(len(normalized), dtype=bool)
    if len(normalized) == 0:
        return hit
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(patterns) + 1))
    for code, pattern in enumerate(patterns):
        start, stop = bounds[code], bounds[code + 1]
        if start == stop:
            continue
        idx = order[start:stop]
        matches = pc.match_substring_regex(normalized.take(pa.array(idx)), pattern)
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
