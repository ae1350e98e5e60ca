"""Classification losses: cross-entropy, focal loss, and auxiliary-head sums.

Every loss is an ``nn.Module`` called as ``loss(logits, targets)`` with logits
``(B, C)`` and integer targets ``(B,)``, returning a scalar mean over the batch.
Class weights are module buffers, so ``loss.to(device)`` moves them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mlkit.errors import ConfigError
from mlkit.models.config import LossConfig

log = logging.getLogger(__name__)

Weights = Sequence[float] | torch.Tensor


def _weights(values: Weights | None, name: str) -> torch.Tensor | None:
    if values is None:
        return None
    weights = torch.as_tensor(values, dtype=torch.float32).flatten().clone()
    if weights.numel() == 0 or bool((weights < 0).any()) or not weights.sum() > 0:
        raise ConfigError(
            f"{name} must be non-negative, one per class, not all zero; "
            f"got {weights.tolist()}"
        )
    return weights


def cross_entropy_loss(
    label_smoothing: float = 0.0, class_weights: Weights | None = None
) -> nn.CrossEntropyLoss:
    """Cross-entropy; with class weights, the weighted mean over the batch.

    ``label_smoothing`` moves that share of the target probability evenly onto
    all classes. Raises ``ConfigError`` for a smoothing outside [0, 1) or
    negative weights.
    """
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return nn.CrossEntropyLoss(
        weight=_weights(class_weights, "class_weights"),
        label_smoothing=label_smoothing,
    )


class FocalLoss(nn.Module):
    """Focal loss: cross-entropy scaled down on examples already classified well.

    Each sample's loss is ``-alpha[y] * (1 - p_y) ** gamma * log(p_y)``, with
    ``p_y`` the predicted probability of the true class. ``gamma`` = 0 gives
    cross-entropy. ``alpha`` (one weight per class) is optional; with it the
    batch mean is weighted like ``F.cross_entropy(weight=...)``, so focal loss
    with ``gamma`` = 0 equals weighted cross-entropy exactly.
    """

    def __init__(self, gamma: float = 2.0, alpha: Weights | None = None) -> None:
        super().__init__()
        if not gamma >= 0:
            raise ConfigError(f"focal loss gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha: torch.Tensor | None
        self.register_buffer("alpha", _weights(alpha, "alpha"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        # 1 - p_t via expm1 stays accurate when p_t is near 1; the floor keeps
        # the gradient of (1 - p_t) ** gamma finite when gamma < 1.
        one_minus_pt = (-torch.expm1(log_pt)).clamp(min=1e-12)
        loss = -one_minus_pt.pow(self.gamma) * log_pt
        if self.alpha is None:
            return loss.mean()
        weight = self.alpha[targets]
        return (weight * loss).sum() / weight.sum()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


def build_loss(cfg: LossConfig, class_weights: Weights | None = None) -> nn.Module:
    """The loss ``cfg`` describes.

    ``class_weights`` (for instance computed from training label counts) is an
    alternative to ``cfg.class_weights``; giving both raises ``ConfigError``.
    """
    if class_weights is not None and cfg.class_weights is not None:
        raise ConfigError(
            "class weights given both in the loss config and as an argument; "
            "give them in one place"
        )
    weights = class_weights if class_weights is not None else cfg.class_weights
    if cfg.kind == "cross_entropy":
        loss: nn.Module = cross_entropy_loss(cfg.label_smoothing, weights)
    elif cfg.kind == "focal":
        loss = FocalLoss(cfg.gamma, weights)
    else:
        raise ConfigError(f"unknown loss {cfg.kind!r}; known: cross_entropy, focal")
    log.info("loss: %s", loss)
    return loss


def combined_loss(
    outputs: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    loss_fn: nn.Module,
    aux_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Loss of the fused logits plus weighted losses of the auxiliary heads.

    ``aux_weights`` maps a modality (``image``, ``text``) to the weight of
    its head's loss (``outputs["<modality>_logits"]``). When the outputs carry
    ``"<modality>_present"``, only samples that have the modality count for
    its head (a text head learns nothing from a sample without a caption); a
    batch where none has it adds nothing. Raises ``ConfigError`` when a
    weighted head is missing from ``outputs``.
    """
    total = loss_fn(outputs["logits"], targets)
    for modality, weight in (aux_weights or {}).items():
        if weight == 0:
            continue
        key = f"{modality}_logits"
        if key not in outputs:
            raise ConfigError(
                f"aux weight given for {modality!r} but the model returned no "
                f"{key!r}; enable aux_heads or drop the weight"
            )
        logits, aux_targets = outputs[key], targets
        present = outputs.get(f"{modality}_present")
        if present is not None:
            if not bool(present.any()):
                continue
            logits, aux_targets = logits[present], targets[present]
        total = total + weight * loss_fn(logits, aux_targets)
    return total
