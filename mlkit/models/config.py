"""Configuration of the classifier: backbone, fusion and loss, as pydantic models.

A ``ModelConfig`` is everything ``build_model`` needs besides the text width and
the number of classes. It is plain data: ``model_dump(mode="json")`` gives a
JSON object that ``parse_model_config`` turns back into an equal config, so a
model card can store it and a server can rebuild the same network.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlkit.errors import ConfigError, describe_validation_error

log = logging.getLogger(__name__)

Modality = Literal["image", "text"]

#: The order in which modalities are stored, fused and reported.
MODALITIES: tuple[str, ...] = ("image", "text")


class VisionConfig(BaseModel):
    """The image backbone.

    ``small_cnn`` is a plain stack of conv-BN-ReLU layers; ``resnet`` uses basic
    residual blocks. Both have ``depth`` stages; stage ``i`` has
    ``width * 2**i`` channels and ``blocks`` layers (or residual blocks), and
    every stage after the first halves the resolution. The stem reduces the
    input by ``stem_stride`` first (4: a stride-2 convolution and a max-pool,
    for photographs around 224 pixels; 1 or 2 for small images). ``pooling``
    turns the last feature map into a vector: ``avg``, ``max`` or ``concat``
    (both, side by side, which doubles ``out_dim``). ``dropout`` is applied to
    that vector during training.
    """

    model_config = ConfigDict(extra="forbid")

    arch: Literal["small_cnn", "resnet"] = "resnet"
    width: int = Field(default=32, ge=1, le=1024)
    depth: int = Field(default=4, ge=1, le=8)
    blocks: int = Field(default=2, ge=1, le=16)
    stem_stride: Literal[1, 2, 4] = 2
    pooling: Literal["avg", "max", "concat"] = "avg"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class ModalityDropoutConfig(BaseModel):
    """Chance, per training sample, of hiding one modality from the model.

    Each sample loses at most one modality: the image with probability
    ``p_image``, else the text with probability ``p_text``, so the two must
    add up to at most 1. It teaches the fused head to cope with a missing
    caption or a poor photo, and is never applied in evaluation mode.
    """

    model_config = ConfigDict(extra="forbid")

    p_image: float = Field(default=0.0, ge=0.0, le=1.0)
    p_text: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _at_most_one(self) -> ModalityDropoutConfig:
        if self.p_image + self.p_text > 1.0 + 1e-9:
            raise ValueError(
                f"p_image + p_text must be at most 1 (a sample never loses both "
                f"modalities), got {self.p_image} + {self.p_text}"
            )
        return self


class FusionConfig(BaseModel):
    """How image and text features become class scores.

    Each modality in ``modalities`` is projected to ``proj_dim`` (Linear, then
    ``norm``, ``activation``, optional L2 normalization, ``dropout``). Fusion
    ``concat_mlp`` concatenates the projections and passes them through one
    hidden layer of ``hidden_dim``; ``weighted_sum`` adds them with learned
    weights that sum to 1. A linear head gives the logits. ``aux_heads`` adds
    one linear head per modality, trained with ``aux_weights`` times the loss.
    ``modalities`` may be ``["image"]`` or ``["text"]`` for ablations.
    """

    model_config = ConfigDict(extra="forbid")

    modalities: tuple[Modality, ...] = ("image", "text")
    proj_dim: int = Field(default=256, ge=1)
    norm: Literal["layernorm", "batchnorm", "none"] = "layernorm"
    activation: Literal["relu", "gelu", "silu"] = "gelu"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    l2_normalize: bool = False
    fusion: Literal["concat_mlp", "weighted_sum"] = "concat_mlp"
    hidden_dim: int = Field(default=256, ge=1)
    aux_heads: bool = False
    aux_weights: dict[Modality, float] = Field(
        default_factory=lambda: {"image": 0.3, "text": 0.3}
    )
    modality_dropout: ModalityDropoutConfig = Field(
        default_factory=ModalityDropoutConfig
    )

    @model_validator(mode="after")
    def _consistent(self) -> FusionConfig:
        if not self.modalities:
            raise ValueError("modalities must name at least one of image, text")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities repeats a name: {list(self.modalities)}")
        # One canonical order, so that two equal configs build equal networks.
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        for modality, weight in self.aux_weights.items():
            if weight < 0:
                raise ValueError(f"aux_weights[{modality!r}] is negative: {weight}")
        drop = self.modality_dropout
        if len(self.modalities) < 2 and (drop.p_image > 0 or drop.p_text > 0):
            raise ValueError(
                "modality_dropout needs both modalities; with modalities "
                f"{list(self.modalities)} set p_image and p_text to 0"
            )
        return self


class LossConfig(BaseModel):
    """The training loss.

    ``cross_entropy`` with optional ``label_smoothing``, or ``focal`` with
    focusing parameter ``gamma`` (0 gives cross-entropy). ``class_weights``
    (one per class, in label order) weights each sample by its true class;
    for focal loss they play the role of the per-class alpha.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cross_entropy", "focal"] = "cross_entropy"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    gamma: float = Field(default=2.0, ge=0.0)
    class_weights: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LossConfig:
        if self.kind == "focal" and self.label_smoothing > 0:
            raise ValueError(
                "label_smoothing applies to cross_entropy only; set it to 0 for "
                "focal loss"
            )
        if self.class_weights is not None:
            if not self.class_weights:
                raise ValueError(
                    "class_weights is empty; omit it or give one per class"
                )
            if any(w < 0 for w in self.class_weights):
                raise ValueError(
                    f"class_weights has a negative value: {self.class_weights}"
                )
            if sum(self.class_weights) <= 0:
                raise ValueError("class_weights are all zero")
        return self


class ModelConfig(BaseModel):
    """Backbone, fusion and loss settings: what a model card stores."""

    model_config = ConfigDict(extra="forbid")

    vision: VisionConfig = Field(default_factory=VisionConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    loss: LossConfig = Field(default_factory=LossConfig)


def parse_model_config(data: Mapping[str, Any] | ModelConfig) -> ModelConfig:
    """A ``ModelConfig`` from a mapping (YAML, a model card's JSON).

    Raises ``ConfigError`` naming every invalid or unknown field.
    """
    if isinstance(data, ModelConfig):
        return data
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"invalid model config: {problems}") from exc
