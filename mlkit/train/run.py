"""Train a model from a prepared manifest: the training stage.

Reads the manifest and its dataset card, computes image normalization on the
training split, fits the text encoder on training descriptions, embeds every
description once (cached on disk), builds the model, trains it with the
Trainer and writes a model directory: ``model.safetensors``, ``model_card.json``
and the text encoder (``text_encoder.safetensors`` + ``.json``). Also loads
such a directory back for prediction.
"""

from __future__ import annotations

import functools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlkit._config import merge_settings, read_config
from mlkit.data.manifest import CARD_NAME, manifest_file, read_card, read_manifest
from mlkit.errors import ConfigError, DataError, describe_validation_error
from mlkit.models import (
    AugmentConfig,
    ModelConfig,
    build_loss,
    build_model,
    combined_loss,
    compute_normalization,
    eval_transform,
    load_image,
    parse_model_config,
    train_transform,
)
from mlkit.text import (
    EmbeddingCache,
    TextConfig,
    TextEncoder,
    build_encoder,
    read_encoder,
    save_encoder,
)
from mlkit.train.checkpoint import load_checkpoint
from mlkit.train.dataset import ManifestDataset, load_images
from mlkit.train.sampling import build_loader
from mlkit.train.trainer import History, TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)

MODEL_DIR_NAME = "model"


class TrainRunConfig(BaseModel):
    """Everything the training stage needs (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    manifest: Path
    out_dir: Path
    data_root: Path | None = None  # default: the data root the manifest was made from
    cache_dir: Path | None = None  # default: <out_dir>/cache
    image_size: int = Field(default=64, ge=8)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    preload_images: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainRunConfig:
        """Load a YAML file, or a packaged config by name (``ci``, ``full``);
        ``overrides`` win over it (nested dicts merge)."""
        data, source = read_config(
            path, package="mlkit.train", folder="configs", what="training config"
        )
        merged = merge_settings(data, overrides, skip_none=True)
        return parse_train_run_config(merged, source=source)


def parse_train_run_config(
    data: dict[str, Any], *, source: str = "training config"
) -> TrainRunConfig:
    try:
        return TrainRunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid: {describe_validation_error(exc)}"
        ) from exc


@dataclass
class TrainResult:
    """What the training stage produced."""

    model_dir: Path
    history: History
    classes: list[str]
    card: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "classes": self.classes,
            "best_epoch": self.history.best_epoch,
            "best_val_macro_f1": self.history.best_val_macro_f1,
            "stopped_early": self.history.stopped_early,
            "weights_sha256": self.card.get("weights_sha256"),
        }


def _split(manifest: pd.DataFrame, name: str, path: Path) -> pd.DataFrame:
    rows = manifest[manifest["split"] == name].reset_index(drop=True)
    if rows.empty:
        raise DataError(
            f"the manifest has no {name!r} rows",
            path=path,
            column="split",
            hint="prepare the data again with a non-zero share for that split",
        )
    return rows


def _data_root(config_root: Path | None, manifest_path: Path) -> Path:
    if config_root is not None:
        return config_root
    card = read_card(Path(manifest_path).with_name(CARD_NAME))
    root = card.get("parameters", {}).get("data_root")
    if not root:
        raise ConfigError(
            f"{manifest_path}: the dataset card does not name a data root; "
            "set data_root in the training config"
        )
    return Path(root)


def _embed(
    cache: EmbeddingCache, encoder: TextEncoder, rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    return cache.embed(
        encoder, rows["sample_id"].tolist(), rows["text"].fillna("").tolist()
    )


def train_model(config: TrainRunConfig, *, resume: bool = False) -> TrainResult:
    """Run the training stage; return the model directory and history.

    With ``resume`` training continues from the state the last finished epoch
    left in ``out_dir`` (same config required), as the Trainer documents.
    """
    manifest_path = manifest_file(config.manifest)
    manifest = read_manifest(manifest_path)
    dataset_card = read_card(manifest_path.with_name(CARD_NAME))
    data_root = _data_root(config.data_root, manifest_path)
    train_rows = _split(manifest, "train", manifest_path)
    val_rows = _split(manifest, "val", manifest_path)

    # Classes are the training labels; the split guarantees every label is there.
    classes = sorted(train_rows["label"].unique().tolist())
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(val_rows["label"]) - set(classes))
    if unknown:
        raise DataError(
            "validation labels missing from train",
            path=manifest_path,
            column="label",
            got=", ".join(unknown),
        )

    # Image normalization from the training images only.
    seed_everything(config.train.seed)
    train_paths = train_rows["image_path"].tolist()
    train_images = (
        load_images(data_root, train_paths) if config.preload_images else None
    )
    mean, std = compute_normalization(
        train_images or (load_image(data_root / p) for p in train_paths),
        size=config.image_size,
    )

    # Text: fit on training descriptions, embed every split once (cached).
    encoder = build_encoder(config.text)
    encoder.fit([t for t in train_rows["text"].fillna("") if t.strip()])
    cache = EmbeddingCache(config.cache_dir or config.out_dir / "cache")
    train_text, train_has = _embed(cache, encoder, train_rows)
    val_text, val_has = _embed(cache, encoder, val_rows)

    def dataset(rows, text, has, transform, images=None) -> ManifestDataset:
        return ManifestDataset(
            data_root,
            rows["image_path"].tolist(),
            text,
            has,
            rows["label"].map(index).to_numpy(),
            transform,
            images=images,
            preload=config.preload_images,
        )

    train_ds = dataset(
        train_rows,
        train_text,
        train_has,
        train_transform(config.image_size, mean, std, config.augment),
        images=train_images,
    )
    val_ds = dataset(
        val_rows, val_text, val_has, eval_transform(config.image_size, mean, std)
    )
    train_loader = build_loader(
        train_ds, config.train, train=True, targets=train_ds.targets.numpy()
    )
    val_loader = build_loader(val_ds, config.train, train=False)

    # Model, loss and training.
    seed_everything(config.train.seed)
    model = build_model(config.model, text_dim=encoder.dim, n_classes=len(classes))
    loss = build_loss(config.model.loss)
    loss_fn = functools.partial(
        combined_loss, loss_fn=loss, aux_weights=model.aux_weights
    )
    card = {
        "task": "skin-condition classification (image + text)",
        "classes": classes,
        "model_config": config.model.model_dump(mode="json"),
        "image": {"size": config.image_size, "mean": list(mean), "std": list(std)},
        "text_encoder": {"id": encoder.encoder_id, "dim": encoder.dim},
        "dataset": {
            "manifest_sha256": dataset_card["manifest"]["sha256"],
            "synthetic": bool(dataset_card.get("synthetic", False)),
            "rows": {"train": len(train_rows), "val": len(val_rows)},
        },
    }
    trainer = Trainer(model, config.train, loss_fn)
    history = trainer.fit(
        train_loader, val_loader, config.out_dir, card=card, resume=resume
    )

    # The model directory: the best checkpoint plus the fitted text encoder.
    model_dir = config.out_dir / MODEL_DIR_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(history.best_checkpoint, model_dir)
    save_encoder(model_dir, encoder)
    final_card = read_card(model_dir / "model_card.json")
    log.info(
        "trained %s classes; best val macro-F1 %.4f at epoch %s -> %s",
        len(classes),
        history.best_val_macro_f1,
        history.best_epoch,
        model_dir,
    )
    return TrainResult(model_dir, history, classes, final_card)


@dataclass
class LoadedModel:
    """A trained model ready to predict: network, card, encoder, transform."""

    model: torch.nn.Module
    card: dict[str, Any]
    encoder: TextEncoder

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    def transform(self):
        image = self.card["image"]
        return eval_transform(image["size"], image["mean"], image["std"])


def load_model(model_dir: str | Path) -> LoadedModel:
    """Load a model directory written by ``train_model`` (hashes verified)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DataError("model directory not found", path=model_dir)
    encoder = read_encoder(model_dir)

    def build(card: dict[str, Any]) -> torch.nn.Module:
        config = parse_model_config(card["model_config"])
        return build_model(
            config, text_dim=card["text_encoder"]["dim"], n_classes=len(card["classes"])
        )

    model, card = load_checkpoint(model_dir, build)
    if encoder.encoder_id != card["text_encoder"]["id"]:
        raise DataError(
            "text encoder does not match the model card",
            path=model_dir,
            expected=card["text_encoder"]["id"],
            got=encoder.encoder_id,
        )
    return LoadedModel(model, card, encoder)


def validation_dataset(config: TrainRunConfig, loaded: LoadedModel) -> ManifestDataset:
    """The validation rows as the trained model sees them (no augmentation)."""
    manifest_path = manifest_file(config.manifest)
    rows = _split(read_manifest(manifest_path), "val", manifest_path)
    index = {label: i for i, label in enumerate(loaded.classes)}
    cache = EmbeddingCache(config.cache_dir or config.out_dir / "cache")
    text, has_text = _embed(cache, loaded.encoder, rows)
    return ManifestDataset(
        _data_root(config.data_root, manifest_path),
        rows["image_path"].tolist(),
        text,
        has_text,
        rows["label"].map(index).to_numpy(),
        loaded.transform(),
        preload=config.preload_images,
    )
