"""The image + text classifier and the factory that builds it from a config.

The image goes through the backbone (attribute ``backbone``, so a trainer can
give its parameters their own learning rate: their names start with
``backbone.``), the text embedding (precomputed by a text encoder) goes
straight to its projection. Both projections have the same width; the fusion
combines them and a linear head gives the class logits.

A missing modality is a zero feature vector: a sample whose ``has_text`` is
False, a batch passed without ``image`` or ``text``, or, during training only,
a modality hidden by modality dropout.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from mlkit.errors import ConfigError, DataError
from mlkit.models.backbones import build_backbone
from mlkit.models.config import FusionConfig, ModelConfig

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class Projection(nn.Module):
    """Linear, norm, activation, optional L2 normalization, dropout.

    With ``norm="batchnorm"`` a training batch must hold at least two samples.
    """

    def __init__(self, in_dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, cfg.proj_dim)
        self.norm: nn.Module
        if cfg.norm == "layernorm":
            self.norm = nn.LayerNorm(cfg.proj_dim)
        elif cfg.norm == "batchnorm":
            self.norm = nn.BatchNorm1d(cfg.proj_dim)
        else:
            self.norm = nn.Identity()
        self.activation = _ACTIVATIONS[cfg.activation]()
        self.l2_normalize = cfg.l2_normalize
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm(self.linear(x)))
        if self.l2_normalize:
            x = F.normalize(x, dim=1)
        return self.dropout(x)


class MultimodalClassifier(nn.Module):
    """Image and text features, projected, fused, classified.

    ``modalities`` in ``cfg`` selects what the model uses; the other input is
    ignored, and a text-only model takes no backbone (pass ``None``). Raises
    ``ConfigError`` when the backbone or ``text_dim`` does not fit the
    modalities, or ``n_classes`` < 2.

    ``forward`` returns ``{"logits": (B, n_classes)}`` and, with auxiliary
    heads, ``"<modality>_logits"`` and ``"<modality>_present"`` (bool: which
    samples had that modality before modality dropout) for each modality.
    """

    def __init__(
        self,
        backbone: nn.Module | None,
        text_dim: int,
        n_classes: int,
        cfg: FusionConfig | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg or FusionConfig()
        self.cfg = cfg
        self.modalities = cfg.modalities
        self.text_dim = int(text_dim)
        self.n_classes = int(n_classes)
        if self.n_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")

        self.backbone = self._check_backbone(backbone)
        self.image_proj = None
        self.text_proj = None
        if "image" in self.modalities:
            self.image_proj = Projection(self.backbone.out_dim, cfg)
        if "text" in self.modalities:
            if self.text_dim < 1:
                raise ConfigError(
                    f"text_dim must be positive for a model that uses text, got "
                    f"{text_dim}"
                )
            self.text_proj = Projection(self.text_dim, cfg)

        n = len(self.modalities)
        self.fusion: nn.Module | None = None
        self.fusion_logits: nn.Parameter | None = None
        if cfg.fusion == "concat_mlp":
            self.fusion = nn.Sequential(
                nn.Linear(n * cfg.proj_dim, cfg.hidden_dim),
                _ACTIVATIONS[cfg.activation](),
                nn.Dropout(cfg.dropout),
            )
            head_in = cfg.hidden_dim
        elif cfg.fusion == "weighted_sum":
            # Zeros: the softmax starts with every modality weighted equally.
            self.fusion_logits = nn.Parameter(torch.zeros(n))
            head_in = cfg.proj_dim
        else:
            raise ConfigError(
                f"unknown fusion {cfg.fusion!r}; known: concat_mlp, weighted_sum"
            )
        self.head = nn.Linear(head_in, self.n_classes)
        self.aux_heads = None
        if cfg.aux_heads:
            self.aux_heads = nn.ModuleDict(
                {m: nn.Linear(cfg.proj_dim, self.n_classes) for m in self.modalities}
            )

    def _check_backbone(self, backbone: nn.Module | None) -> nn.Module | None:
        if "image" not in self.modalities:
            if backbone is not None:
                raise ConfigError(
                    "a text-only model takes no backbone; pass backbone=None"
                )
            return None
        if backbone is None:
            raise ConfigError("a model that uses images needs a backbone")
        if not isinstance(getattr(backbone, "out_dim", None), int):
            raise ConfigError(
                f"backbone {type(backbone).__name__} has no integer out_dim attribute"
            )
        return backbone

    @property
    def aux_weights(self) -> dict[str, float]:
        """Weights of the auxiliary heads' losses; empty without aux heads."""
        if self.aux_heads is None:
            return {}
        return {m: self.cfg.aux_weights.get(m, 0.0) for m in self.modalities}

    def modality_weights(self) -> torch.Tensor:
        """The weighted-sum fusion's weights, one per modality, summing to 1.

        Raises ``ConfigError`` for ``concat_mlp`` fusion, which has none.
        """
        if self.fusion_logits is None:
            raise ConfigError("modality weights exist only for weighted_sum fusion")
        return torch.softmax(self.fusion_logits, dim=0)

    def forward(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        has_text: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits for a batch; see the class docstring for the outputs.

        ``has_text`` marks samples with a caption; when omitted, a row of
        zeros in ``text`` means no caption. ``image_features`` replaces
        ``image`` with what the backbone would make of it, shape (batch,
        ``backbone.out_dim``), for callers that ran the backbone elsewhere.
        Raises ``DataError`` when inputs disagree on the batch size, ``text``
        or ``image_features`` has the wrong width, both ``image`` and
        ``image_features`` are given, or no input the model uses is given.
        """
        if image is not None and image_features is not None:
            raise DataError("pass image or image_features, not both")
        batch = self._batch_size(
            image if image_features is None else image_features, text, has_text
        )
        features: list[torch.Tensor] = []
        present: dict[str, torch.Tensor] = {}
        if self.image_proj is not None:
            feature, present["image"] = self._image_feature(
                image, batch, image_features
            )
            features.append(feature)
        if self.text_proj is not None:
            feature, present["text"] = self._text_feature(text, has_text, batch)
            features.append(feature)

        outputs: dict[str, torch.Tensor] = {}
        if self.aux_heads is not None:
            for modality, feature in zip(self.modalities, features, strict=True):
                outputs[f"{modality}_logits"] = self.aux_heads[modality](feature)
                outputs[f"{modality}_present"] = present[modality]

        if self.training:
            features = self._modality_dropout(features)
        if self.fusion is not None:
            fused = self.fusion(torch.cat(features, dim=1))
        else:
            weights = self.modality_weights()
            fused = sum(w * f for w, f in zip(weights, features, strict=True))
        outputs["logits"] = self.head(fused)
        return outputs

    def _batch_size(
        self,
        image: torch.Tensor | None,
        text: torch.Tensor | None,
        has_text: torch.Tensor | None,
    ) -> int:
        sizes = {}
        if self.image_proj is not None and image is not None:
            sizes["image"] = image.shape[0]
        if self.text_proj is not None:
            if text is not None:
                sizes["text"] = text.shape[0]
            if has_text is not None:
                sizes["has_text"] = has_text.shape[0]
        if not sizes:
            raise DataError(
                f"no input for a model that uses {', '.join(self.modalities)}"
            )
        if len(set(sizes.values())) > 1:
            raise DataError(
                "inputs disagree on the batch size",
                got=", ".join(f"{k} {v}" for k, v in sizes.items()),
            )
        return next(iter(sizes.values()))

    def _image_feature(
        self,
        image: torch.Tensor | None,
        batch: int,
        image_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.image_proj is not None and self.backbone is not None
        device = self.head.weight.device
        if image_features is not None:
            width = self.backbone.out_dim
            if image_features.ndim != 2 or image_features.shape[1] != width:
                raise DataError(
                    "image features have the wrong shape",
                    expected=f"(batch, {width})",
                    got=str(tuple(image_features.shape)),
                )
        elif image is None:
            zeros = torch.zeros(batch, self.cfg.proj_dim, device=device)
            return zeros, torch.zeros(batch, dtype=torch.bool, device=device)
        else:
            image_features = self.backbone(image)
        feature = self.image_proj(image_features)
        return feature, torch.ones(batch, dtype=torch.bool, device=device)

    def _text_feature(
        self, text: torch.Tensor | None, has_text: torch.Tensor | None, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.text_proj is not None
        device = self.head.weight.device
        if text is None:
            zeros = torch.zeros(batch, self.cfg.proj_dim, device=device)
            return zeros, torch.zeros(batch, dtype=torch.bool, device=device)
        if text.ndim != 2 or text.shape[1] != self.text_dim:
            raise DataError(
                "text embeddings have the wrong shape",
                expected=f"(batch, {self.text_dim})",
                got=str(tuple(text.shape)),
            )
        mask = (text != 0).any(dim=1) if has_text is None else has_text.bool()
        feature = self.text_proj(text)
        return feature * mask.unsqueeze(1).to(feature.dtype), mask

    def _modality_dropout(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Zero the image or the text feature of random samples (never both)."""
        drop = self.cfg.modality_dropout
        if len(features) < 2 or (drop.p_image == 0 and drop.p_text == 0):
            return features
        batch = features[0].shape[0]
        draw = torch.rand(batch, device=features[0].device)
        keep_image = (draw >= drop.p_image).unsqueeze(1)
        keep_text = ~((draw >= drop.p_image) & (draw < drop.p_image + drop.p_text))
        image, text = features
        return [
            image * keep_image.to(image.dtype),
            text * keep_text.unsqueeze(1).to(text.dtype),
        ]


def build_model(
    config: ModelConfig, text_dim: int, n_classes: int
) -> MultimodalClassifier:
    """The classifier ``config`` describes, for ``text_dim``-wide text embeddings.

    The same config, text width and class count always give the same parameter
    names and shapes, so weights saved from one build load into another. A
    text-only model has no backbone.
    """
    backbone = None
    if "image" in config.fusion.modalities:
        backbone = build_backbone(config.vision)
    model = MultimodalClassifier(backbone, text_dim, n_classes, config.fusion)
    log.info(
        "built model: modalities %s, %s fusion, %s classes, %s parameters",
        "+".join(model.modalities),
        config.fusion.fusion,
        n_classes,
        sum(p.numel() for p in model.parameters()),
    )
    return model
