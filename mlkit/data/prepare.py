"""From public source files to one manifest: the preprocessing stage.

Stages, in order: standardize (read each source into the standard schema, add
SkinCap captions), harmonize labels, filter label leakage from descriptions,
validate images, drop rare labels, split, and write the manifest with its card.
Bad rows and images are quarantined with a reason; they never stop the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlkit.data import images, split
from mlkit.data.harmonize import HarmonizeReport, Taxonomy, drop_rare_labels, harmonize
from mlkit.data.leakage import RULES, LeakageReport, filter_leakage
from mlkit.data.manifest import ManifestPaths, write_manifest
from mlkit.data.schema import AUGMENTERS, DATASETS, SOURCES, conform_quarantine
from mlkit.data.sources import apply_skincap, read_source
from mlkit.errors import ConfigError, DataError, describe_validation_error

log = logging.getLogger(__name__)

SYNTHETIC_MARKER = "synthetic.json"


class PrepareConfig(BaseModel):
    """Parameters of the preprocessing stage (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    data_root: Path
    out_dir: Path
    sources: list[str] = Field(default_factory=lambda: list(SOURCES))
    source_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    taxonomy: Path | None = None
    label_map: dict[str, str] = Field(default_factory=dict)
    keep_unmapped: bool = False
    min_samples_per_label: int = Field(default=1, ge=1)
    leakage_rules: list[str] = Field(default_factory=lambda: list(RULES))
    image_check: Literal["full", "header", "none"] = "full"
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    workers: int | None = Field(default=None, ge=1)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SOURCES]
        if unknown:
            raise ValueError(
                f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}"
            )
        if not any(s in DATASETS for s in value):
            raise ValueError(f"name at least one dataset of {', '.join(DATASETS)}")
        return list(dict.fromkeys(value))

    @field_validator("leakage_rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        unknown = [r for r in value if r not in RULES]
        if unknown:
            names, known = ", ".join(unknown), ", ".join(RULES)
            raise ValueError(f"unknown leakage rule(s) {names}; known: {known}")
        return value

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> PrepareConfig:
        """Load a YAML file; ``overrides`` (e.g. from the CLI) win over it."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of parameters")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return parse_config(data, source=str(path))


def parse_config(data: dict[str, Any], *, source: str = "parameters") -> PrepareConfig:
    try:
        return PrepareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid preprocessing config: {describe_validation_error(exc)}"
        ) from exc


@dataclass
class Standardized:
    """All sources read into the standard schema."""

    frame: pd.DataFrame
    quarantine: pd.DataFrame
    dropped: dict[str, dict[str, int]]
    captions: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


@dataclass
class PrepareResult:
    """Everything the preprocessing stage produced, for reports and notebooks."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    card: dict[str, Any]
    paths: ManifestPaths
    standardized: pd.DataFrame  # before harmonization, for before/after tables
    harmonize: HarmonizeReport
    leakage: LeakageReport
    rare_labels: pd.DataFrame
    dropped: dict[str, dict[str, int]]
    timings: dict[str, float]


def standardize(
    data_root: str | Path,
    sources: list[str],
    source_options: dict[str, dict[str, Any]] | None = None,
) -> Standardized:
    """Read every named source and add SkinCap captions when it is named."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataError("data root is not a directory", path=data_root)
    options = source_options or {}
    unknown = sorted(set(options) - set(SOURCES))
    if unknown:
        raise ConfigError(f"source_options for unknown source(s): {', '.join(unknown)}")

    frames, quarantines, dropped, files = [], [], {}, []
    for name in sources:
        if name in AUGMENTERS:
            continue
        data = read_source(name, data_root, options.get(name))
        frames.append(data.frame)
        quarantines.append(data.quarantine)
        dropped[name] = dict(data.dropped)
        files.extend(data.files)
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame["sample_id"].duplicated()
    if duplicated.any():
        examples = frame.loc[duplicated, "sample_id"].head(5).tolist()
        raise DataError(
            "duplicate sample ids across sources",
            column="sample_id",
            got=", ".join(examples),
        )

    captions: dict[str, int] = {}
    if "skincap" in sources:
        frame, captions = apply_skincap(frame, data_root, options.get("skincap"))
    quarantine = conform_quarantine(pd.concat(quarantines, ignore_index=True))
    return Standardized(frame, quarantine, dropped, captions, files)


def prepare(config: PrepareConfig, *, progress: bool = False) -> PrepareResult:
    """Run every preprocessing stage and write the manifest into ``out_dir``."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    # Standardize.
    std = standardize(config.data_root, config.sources, config.source_options)
    lap("standardize")

    # Harmonize labels.
    taxonomy = Taxonomy.load(config.taxonomy)
    if config.label_map:
        taxonomy = taxonomy.with_overrides(config.label_map)
    frame, harmonize_report = harmonize(
        std.frame, taxonomy, keep_unmapped=config.keep_unmapped
    )
    lap("harmonize")

    # Remove sentences that leak the label.
    text, leakage_report = filter_leakage(
        frame["text"], frame["label"], taxonomy, rules=config.leakage_rules
    )
    # The unfiltered text stays beside it, for the ablation that shows what the
    # filter prevents; models train on `text` only.
    frame["text_unfiltered"] = frame["text"]
    frame["text"] = text
    lap("leakage")

    # Quarantine missing and broken images.
    frame, image_quarantine = images.validate_images(
        frame,
        config.data_root,
        mode=config.image_check,
        max_pixels=config.max_image_pixels,
        workers=config.workers,
        progress=progress,
    )
    quarantine = conform_quarantine(
        pd.concat([std.quarantine, image_quarantine], ignore_index=True)
    )
    lap("images")

    # Drop rare labels, then split.
    frame, rare = drop_rare_labels(frame, config.min_samples_per_label)
    if frame.empty:
        raise DataError(
            "no rows left after preprocessing",
            path=config.data_root,
            hint="check the quarantine report and min_samples_per_label",
        )
    frame = split.assign_splits(
        frame, fractions=config.split_fractions, seed=config.seed
    )
    split.check_splits(frame)
    lap("split")

    # Write the manifest and its card.
    synthetic = (Path(config.data_root) / SYNTHETIC_MARKER).is_file()
    reports = {
        "taxonomy_version": taxonomy.version,
        "quarantine": quarantine["reason"].value_counts().sort_index().to_dict(),
        "dropped_by_rule": std.dropped,
        "captions": std.captions,
        "unmapped_labels": {
            "rows": harmonize_report.n_unmapped,
            "kept": config.keep_unmapped,
            "labels": harmonize_report.unmapped[["dataset", "raw_label", "count"]]
            .astype(str)
            .to_dict(orient="records"),
        },
        "excluded_labels_rows": harmonize_report.n_excluded,
        "rare_labels": rare.astype({"label": str}).to_dict(orient="records"),
        "leakage": {
            "sentences_total": leakage_report.sentences_total,
            "sentences_removed": leakage_report.sentences_removed,
            "removed_by_rule": leakage_report.removed_by_rule,
        },
        "timings_s": timings,
    }
    paths, card = write_manifest(
        frame,
        config.out_dir,
        parameters=config.model_dump(mode="json"),
        quarantine=quarantine,
        reports=reports,
        synthetic=synthetic,
    )
    lap("write")
    log.info(
        "prepared %s rows, %s labels, %s quarantined in %.1f s",
        len(frame),
        frame["label"].nunique(),
        len(quarantine),
        sum(timings.values()),
    )
    return PrepareResult(
        manifest=frame,
        quarantine=quarantine,
        card=card,
        paths=paths,
        standardized=std.frame,
        harmonize=harmonize_report,
        leakage=leakage_report,
        rare_labels=rare,
        dropped=std.dropped,
        timings=timings,
    )
