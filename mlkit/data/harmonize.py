"""Label harmonization: source spellings -> canonical labels of a versioned taxonomy.

The taxonomy is data (``mlkit/data/taxonomy.yaml``): canonical labels with their
synonyms, optional ``maps_to`` merges between labels, and raw labels that are
deliberately excluded with a reason. Spellings are compared after
:func:`normalize_label`, so case, hyphens and punctuation do not matter.
Mappings are followed to a fixed point: a label mapped to another mapped label
ends at the final one.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mlkit.data.schema import STRING
from mlkit.errors import ConfigError, DataError, describe_validation_error

log = logging.getLogger(__name__)

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_APOSTROPHES = re.compile(r"['\u2019`]")


def normalize_label(text: str) -> str:
    """Fold a label spelling to the form used for matching.

    Accents are dropped (``café`` -> ``cafe``), letters are lower-cased,
    apostrophes are deleted (``beau's`` -> ``beaus``) and every other run of
    non-alphanumeric characters becomes one space.
    """
    folded = unicodedata.normalize("NFKD", text)
    folded = folded.encode("ascii", "ignore").decode("ascii").lower()
    folded = _APOSTROPHES.sub("", folded)
    return _NON_ALNUM.sub(" ", folded).strip()


class _LabelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    synonyms: list[str] = []
    maps_to: str | None = None

    @field_validator("synonyms", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `synonyms:` with nothing after it is YAML null; read it as no synonyms.
        return [] if value is None else value


class _TaxonomyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    description: str = ""
    labels: dict[str, _LabelEntry]
    excluded: dict[str, str] = {}


@dataclass(frozen=True)
class Resolution:
    """What the taxonomy says about one raw label."""

    kind: Literal["mapped", "excluded", "unmapped"]
    label: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Taxonomy:
    """Canonical labels, their spellings, merges and exclusions.

    Build one with :meth:`load` (the packaged file, or a path) or
    :meth:`from_dict`. Invalid files raise :class:`ConfigError` naming the
    source and the offending entry.
    """

    version: str
    categories: Mapping[str, str]  # entry name -> category
    maps_to: Mapping[str, str]  # entry name -> next entry name
    spellings: Mapping[str, str]  # normalized spelling -> entry name
    excluded: Mapping[str, str]  # normalized raw label -> reason
    source: str = "<dict>"
    overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Taxonomy:
        """Load the packaged taxonomy, or the YAML file at ``path``."""
        if path is None:
            ref = resources.files("mlkit.data").joinpath("taxonomy.yaml")
            text, source = ref.read_text(encoding="utf-8"), "mlkit/data/taxonomy.yaml"
        else:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"{path}: taxonomy file not found")
            text, source = path.read_text(encoding="utf-8"), str(path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> Taxonomy:
        try:
            parsed = _TaxonomyFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"{source}: invalid taxonomy: {describe_validation_error(exc)}"
            ) from exc

        names = {normalize_label(name): name for name in parsed.labels}
        for name in parsed.labels:
            if normalize_label(name) != name:
                raise ConfigError(
                    f"{source}: label {name!r} is not in normal form; "
                    f"write it as {normalize_label(name)!r}"
                )

        spellings: dict[str, str] = dict(names)
        for name, entry in parsed.labels.items():
            for synonym in entry.synonyms:
                key = normalize_label(synonym)
                owner = spellings.get(key)
                if owner is not None and owner != name:
                    raise ConfigError(
                        f"{source}: spelling {synonym!r} of label {name!r} "
                        f"already belongs to label {owner!r}"
                    )
                spellings[key] = name

        maps_to: dict[str, str] = {}
        for name, entry in parsed.labels.items():
            if entry.maps_to is None:
                continue
            target = normalize_label(entry.maps_to)
            if target not in names:
                raise ConfigError(
                    f"{source}: label {name!r} maps_to unknown label {entry.maps_to!r}"
                )
            maps_to[name] = target

        excluded = {}
        for raw, reason in parsed.excluded.items():
            key = normalize_label(raw)
            if key in spellings:
                raise ConfigError(
                    f"{source}: {raw!r} is both excluded and a spelling of "
                    f"label {spellings[key]!r}"
                )
            excluded[key] = reason

        taxonomy = cls(
            version=parsed.version,
            categories={n: e.category for n, e in parsed.labels.items()},
            maps_to=maps_to,
            spellings=spellings,
            excluded=excluded,
            source=source,
        )
        for name in parsed.labels:
            taxonomy._follow(name)  # raises on a cycle
        return taxonomy

    def with_overrides(self, label_map: Mapping[str, str]) -> Taxonomy:
        """A copy where ``label_map`` (raw spelling -> label or spelling) wins.

        Targets are resolved through the taxonomy too, so an override may point
        at a synonym or at a label that is itself merged into another.
        """
        overrides = dict(self.overrides)
        for raw, target in label_map.items():
            key = normalize_label(raw)
            if not key:
                raise ConfigError(f"label_map: empty source spelling {raw!r}")
            overrides[key] = normalize_label(target)
        result = Taxonomy(
            version=self.version,
            categories=self.categories,
            maps_to=self.maps_to,
            spellings=self.spellings,
            excluded=self.excluded,
            source=self.source,
            overrides=overrides,
        )
        for key in overrides:
            result.lookup(key)  # raises on a cycle
        return result

    def _follow(self, start: str) -> str:
        """Follow ``maps_to`` from entry ``start`` to its terminal entry."""
        seen = [start]
        current = start
        while current in self.maps_to:
            current = self.maps_to[current]
            if current in seen:
                chain = " -> ".join([*seen, current])
                raise ConfigError(f"{self.source}: maps_to cycle: {chain}")
            seen.append(current)
        return current

    def lookup(self, raw: str) -> Resolution:
        """Resolve one raw label spelling; never raises for unknown spellings."""
        key = normalize_label(raw)
        seen = [key]
        while key in self.overrides:
            key = self.overrides[key]
            if key in seen:
                chain = " -> ".join([*seen, key])
                raise ConfigError(f"label_map: cycle: {chain}")
            seen.append(key)
        if key in self.spellings:
            return Resolution("mapped", self._follow(self.spellings[key]))
        if key in self.excluded:
            return Resolution("excluded", reason=self.excluded[key])
        return Resolution("unmapped")

    def resolve(self, raw: str) -> str | None:
        """The canonical label for ``raw``, or None if excluded or unknown."""
        return self.lookup(raw).label

    @cached_property
    def labels(self) -> list[str]:
        """Terminal canonical labels (those that are not merged elsewhere)."""
        return sorted(n for n in self.categories if n not in self.maps_to)

    @cached_property
    def _terms(self) -> dict[str, tuple[str, ...]]:
        terms: dict[str, set[str]] = {label: {label} for label in self.labels}
        for spelling, entry in self.spellings.items():
            terms[self._follow(entry)].add(spelling)
        return {label: tuple(sorted(t)) for label, t in terms.items()}

    def terms(self, label: str) -> tuple[str, ...]:
        """Every normalized spelling that resolves to canonical ``label``.

        Used by the leakage filter to find sentences that name the diagnosis.
        An unknown label gives just its own normalized form.
        """
        return self._terms.get(label, (normalize_label(label),))

    def category(self, label: str) -> str | None:
        return self.categories.get(label)


@dataclass
class HarmonizeReport:
    """What harmonization did, for the dataset card and the notebook."""

    taxonomy_version: str
    counts_before: pd.DataFrame  # dataset, raw_label, count
    unmapped: pd.DataFrame  # dataset, raw_label, normalized, count, kept
    excluded: pd.DataFrame  # dataset, raw_label, reason, count

    @property
    def n_unmapped(self) -> int:
        return int(self.unmapped["count"].sum())

    @property
    def n_excluded(self) -> int:
        return int(self.excluded["count"].sum())


def harmonize(
    frame: pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    keep_unmapped: bool = False,
) -> tuple[pd.DataFrame, HarmonizeReport]:
    """Fill ``label`` from ``raw_label`` through ``taxonomy``.

    Rows whose raw label the taxonomy excludes are dropped. Unmapped rows are
    dropped, or kept under their normalized spelling as a label of their own
    when ``keep_unmapped`` is true; either way they are reported. Only unique
    spellings are resolved, so the cost does not grow with the row count.
    """
    if "raw_label" not in frame.columns:
        raise DataError("cannot harmonize", column="raw_label", expected="a column")

    # Resolve each distinct spelling once; rows refer to them by code. The code
    # len(uniques) stands for a null raw label.
    codes, uniques = pd.factorize(frame["raw_label"].astype(STRING))
    n_spellings = len(uniques)
    codes = np.where(codes < 0, n_spellings, codes)
    resolutions = [taxonomy.lookup(value) for value in uniques]
    resolutions.append(Resolution("unmapped"))
    kind = np.array([r.kind for r in resolutions])
    spellings = [*uniques, None]

    # Rows per (dataset, spelling), from one bincount over a combined code.
    dataset_codes, datasets = pd.factorize(frame["dataset"].astype(STRING))
    pair = dataset_codes.astype(np.int64) * (n_spellings + 1) + codes
    counts = np.bincount(pair, minlength=len(datasets) * (n_spellings + 1))
    present = np.flatnonzero(counts)
    pair_dataset, pair_code = np.divmod(present, n_spellings + 1)
    table = pd.DataFrame(
        {
            "dataset": pd.array(np.asarray(datasets)[pair_dataset], dtype=STRING),
            "raw_label": pd.array([spellings[c] for c in pair_code], dtype=STRING),
            "count": counts[present],
        }
    )
    counts_before = table.sort_values(
        ["dataset", "count"], ascending=[True, False], kind="stable"
    ).reset_index(drop=True)

    pair_kind = kind[pair_code]
    unmapped = table[pair_kind == "unmapped"].copy()
    unmapped["normalized"] = [
        normalize_label(v) if isinstance(v, str) else "" for v in unmapped["raw_label"]
    ]
    unmapped["kept"] = keep_unmapped
    unmapped = unmapped.sort_values("count", ascending=False, kind="stable")
    excluded = table[pair_kind == "excluded"].copy()
    excluded.insert(
        2, "reason", [resolutions[c].reason for c in pair_code[pair_kind == "excluded"]]
    )

    # The label of every row, taken from its spelling's resolution.
    labels = [r.label for r in resolutions]
    if keep_unmapped:
        labels = [
            normalize_label(v) or None
            if r.kind == "unmapped" and v is not None
            else lab
            for v, r, lab in zip(spellings, resolutions, labels, strict=True)
        ]
    label_array = pa.array(labels, type=pa.large_string()).take(pa.array(codes))
    out = frame.copy()
    out["label"] = pd.array(label_array, dtype=STRING)
    out = out.loc[out["label"].notna().to_numpy()].reset_index(drop=True)

    report = HarmonizeReport(
        taxonomy_version=taxonomy.version,
        counts_before=counts_before.reset_index(drop=True),
        unmapped=unmapped.reset_index(drop=True),
        excluded=excluded.reset_index(drop=True),
    )
    log.info(
        "harmonized %s rows to %s labels (taxonomy %s): %s unmapped (%s), %s excluded",
        len(frame),
        out["label"].nunique(),
        taxonomy.version,
        report.n_unmapped,
        "kept" if keep_unmapped else "dropped",
        report.n_excluded,
    )
    return out, report


def drop_rare_labels(
    frame: pd.DataFrame, min_samples: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows of labels with fewer than ``min_samples`` rows in total.

    Returns the kept rows and a table of the dropped labels with their counts.
    """
    if min_samples < 1:
        raise ConfigError(f"min_samples_per_label must be >= 1, got {min_samples}")
    counts = frame["label"].value_counts()
    rare = counts[counts < min_samples]
    dropped = rare.rename_axis("label").rename("count").reset_index()
    kept = frame.loc[~frame["label"].isin(rare.index)].reset_index(drop=True)
    if len(rare):
        log.info(
            "dropped %s labels with fewer than %s samples (%s rows)",
            len(rare),
            min_samples,
            int(rare.sum()),
        )
    return kept, dropped
