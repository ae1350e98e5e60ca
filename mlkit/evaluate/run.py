"""Evaluate a trained model on the test split: the evaluation stage.

Loads a model directory (hashes verified), predicts the test split of the
manifest it was trained on, and builds the evaluation report: metrics,
per-class and per-group tables, calibration, abstention and ablations.

Ablations, all on the same test rows:

- ``image_only`` / ``text_only``: the trained model with the other modality
  removed at inference. The model was trained with modality dropout, so it has
  seen samples with one modality missing.
- ``text_only_filter_off`` / ``text_only_filter_on``: two linear text-only
  classifiers trained on the training split's descriptions before and after
  the leakage filter, each tested on the matching test descriptions. The gap
  between them is what the filter keeps out of the model.

This module imports torch; ``import mlkit.evaluate`` alone does not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.utils.data import DataLoader

from mlkit.data.manifest import CARD_NAME, manifest_file, read_card, read_manifest
from mlkit.errors import ConfigError, DataError, describe_validation_error
from mlkit.evaluate.metrics import AbstentionThresholds
from mlkit.evaluate.report import evaluation_report, write_report
from mlkit.text import EmbeddingCache, TextEncoder, build_encoder
from mlkit.train.dataset import ManifestDataset
from mlkit.train.run import LoadedModel, load_model

log = logging.getLogger(__name__)

REPORT_NAME = "evaluation_report.json"


class EvaluateRunConfig(BaseModel):
    """Parameters of the evaluation stage (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path
    manifest: Path
    out_dir: Path
    data_root: Path | None = None  # default: the data root of the manifest
    cache_dir: Path | None = None  # default: <out_dir>/cache
    batch_size: int = Field(default=64, ge=1)
    abstention: AbstentionThresholds = Field(
        default_factory=lambda: AbstentionThresholds(
            confidence=0.5, top2_gap=0.1, normalized_entropy=0.8
        )
    )
    ablations: bool = True


def parse_evaluate_config(
    data: dict[str, Any], *, source: str = "evaluation config"
) -> EvaluateRunConfig:
    try:
        return EvaluateRunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid: {describe_validation_error(exc)}"
        ) from exc


def predict_probs(
    loaded: LoadedModel,
    dataset: ManifestDataset,
    *,
    batch_size: int = 64,
    modalities: tuple[str, ...] = ("image", "text"),
) -> np.ndarray:
    """Class probabilities for every row of ``dataset``, in order.

    ``modalities`` removes the others at inference (for ablations).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model = loaded.model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            outputs = model(
                image=batch["image"] if "image" in modalities else None,
                text=batch["text"] if "text" in modalities else None,
                has_text=batch["has_text"] if "text" in modalities else None,
            )
            out.append(torch.softmax(outputs["logits"].float(), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(loaded.classes)))


def _text_only_probs(
    encoder: TextEncoder,
    train_texts: list[str],
    train_targets: np.ndarray,
    test_texts: list[str],
    n_classes: int,
) -> np.ndarray:
    """A linear text-only classifier fitted on ``train_texts``; test probs."""
    from sklearn.linear_model import LogisticRegression

    encoder.fit([t for t in train_texts if t.strip()])
    x_train = encoder.encode(train_texts)
    x_test = encoder.encode(test_texts)
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(x_train, train_targets)
    probs = np.zeros((len(test_texts), n_classes))
    probs[:, classifier.classes_] = classifier.predict_proba(x_test)
    return probs


def evaluate_model(config: EvaluateRunConfig) -> dict[str, Any]:
    """Run the evaluation stage; write and return the evaluation report."""
    loaded = load_model(config.model_dir)
    manifest_path = manifest_file(config.manifest)
    manifest = read_manifest(manifest_path)
    dataset_card = read_card(manifest_path.with_name(CARD_NAME))

    # The model must have been trained on this very manifest.
    trained_on = loaded.card["dataset"]["manifest_sha256"]
    actual = dataset_card["manifest"]["sha256"]
    if trained_on != actual:
        raise DataError(
            "the model was trained on another manifest",
            path=manifest_path,
            expected=f"sha256 {trained_on}",
            got=actual,
        )
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise DataError(
            "the manifest has no test rows; evaluation never falls back to val",
            path=manifest_path,
            column="split",
        )
    classes = loaded.classes
    unknown = sorted(set(test["label"]) - set(classes))
    if unknown:
        raise DataError(
            "test labels the model does not know",
            path=manifest_path,
            column="label",
            expected=", ".join(classes),
            got=", ".join(unknown),
        )
    index = {label: i for i, label in enumerate(classes)}
    y_true = test["label"].map(index).to_numpy()

    data_root = config.data_root or Path(dataset_card["parameters"]["data_root"])
    cache = EmbeddingCache(config.cache_dir or config.out_dir / "cache")
    text, has_text = cache.embed(
        loaded.encoder, test["sample_id"].tolist(), test["text"].fillna("").tolist()
    )
    dataset = ManifestDataset(
        data_root,
        test["image_path"].tolist(),
        text,
        has_text,
        y_true,
        loaded.transform(),
    )
    probs = predict_probs(loaded, dataset, batch_size=config.batch_size)

    ablations: dict[str, np.ndarray] = {}
    if config.ablations:
        ablations["image_and_text"] = probs
        for modality in ("image", "text"):
            ablations[f"{modality}_only"] = predict_probs(
                loaded, dataset, batch_size=config.batch_size, modalities=(modality,)
            )
        ablations.update(_leakage_ablation(manifest, loaded, index, test))

    report = evaluation_report(
        y_true,
        probs,
        classes,
        model_sha256=loaded.card["weights_sha256"],
        manifest_sha256=actual,
        synthetic=bool(dataset_card.get("synthetic", False)),
        fitzpatrick_group=test["fitzpatrick_group"].astype(object).to_numpy(),
        dataset=test["dataset"].astype(object).to_numpy(),
        abstention=config.abstention,
        ablations=ablations,
    )
    config.out_dir.mkdir(parents=True, exist_ok=True)
    write_report(config.out_dir / REPORT_NAME, report)
    log.info(
        "test macro-F1 %.4f, accuracy %.4f on %s rows -> %s",
        report["metrics"]["macro_f1"],
        report["metrics"]["accuracy"],
        len(test),
        config.out_dir / REPORT_NAME,
    )
    return report


def _leakage_ablation(
    manifest: pd.DataFrame,
    loaded: LoadedModel,
    index: dict[str, int],
    test: pd.DataFrame,
) -> dict[str, np.ndarray]:
    """Text-only classifiers on descriptions before and after the filter."""
    if "text_unfiltered" not in manifest.columns:
        log.warning("manifest has no unfiltered text; leakage ablation skipped")
        return {}
    train = manifest[manifest["split"] == "train"]
    targets = train["label"].map(index).to_numpy()
    encoder_config = {"kind": "tfidf", "dim": 32}
    out = {}
    for name, column in (("off", "text_unfiltered"), ("on", "text")):
        train_texts = train[column].fillna("").tolist()
        if sum(1 for t in train_texts if t.strip()) <= encoder_config["dim"]:
            log.warning("too few training descriptions for the leakage ablation")
            return {}
        out[f"text_only_filter_{name}"] = _text_only_probs(
            build_encoder(encoder_config),
            train_texts,
            targets,
            test[column].fillna("").tolist(),
            len(loaded.classes),
        )
    return out
