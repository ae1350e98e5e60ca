from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mlkit.errors import ConfigError
from mlkit.models.config import LossConfig
from mlkit.models.losses import (
    FocalLoss,
    build_loss,
    combined_loss,
    cross_entropy_loss,
)

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
TARGETS = torch.tensor([0, 1, 2])


def _per_sample_ce() -> list[float]:
    # -log softmax of the true class, by hand.
    return [
        -(2.0 - math.log(math.exp(2) + 2)),
        -(1.0 - math.log(1 + math.e + math.exp(3))),
        math.log(3),
    ]


def test_cross_entropy_matches_a_hand_computed_value():
    expected = sum(_per_sample_ce()) / 3
    assert cross_entropy_loss()(LOGITS, TARGETS).item() == pytest.approx(expected)


def test_label_smoothing_matches_torch():
    loss = cross_entropy_loss(label_smoothing=0.1)(LOGITS, TARGETS)
    reference = F.cross_entropy(LOGITS, TARGETS, label_smoothing=0.1)
    torch.testing.assert_close(loss, reference)
    assert loss != cross_entropy_loss()(LOGITS, TARGETS)


def test_class_weights_change_the_loss_as_a_weighted_mean():
    weights = [1.0, 2.0, 0.5]
    loss = cross_entropy_loss(class_weights=weights)(LOGITS, TARGETS).item()
    per_sample = _per_sample_ce()
    expected = sum(w * v for w, v in zip(weights, per_sample, strict=True)) / 3.5
    assert loss == pytest.approx(expected)
    assert loss != pytest.approx(cross_entropy_loss()(LOGITS, TARGETS).item())


def test_focal_with_gamma_zero_equals_cross_entropy():
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(16) % 5
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, targets), F.cross_entropy(logits, targets)
    )
    alpha = [0.5, 1.0, 2.0, 1.0, 0.25]
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, alpha=alpha)(logits, targets),
        F.cross_entropy(logits, targets, weight=torch.tensor(alpha)),
    )


def test_focal_matches_a_hand_computed_value():
    gamma = 2.0
    per_sample = _per_sample_ce()
    expected = sum((1 - math.exp(-ce)) ** gamma * ce for ce in per_sample) / 3
    assert FocalLoss(gamma)(LOGITS, TARGETS).item() == pytest.approx(expected)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0, 0.0], [0.0, 6.0]])
    hard = torch.tensor([[0.2, 0.0], [0.0, 0.2]])
    targets = torch.tensor([0, 1])
    ratio_easy = FocalLoss(2.0)(easy, targets) / F.cross_entropy(easy, targets)
    ratio_hard = FocalLoss(2.0)(hard, targets) / F.cross_entropy(hard, targets)
    assert ratio_easy < 0.01 < ratio_hard


def test_focal_gradient_is_finite_for_confident_predictions():
    logits = torch.tensor([[40.0, -40.0]], requires_grad=True)
    FocalLoss(gamma=0.5)(logits, torch.tensor([0])).backward()
    assert torch.isfinite(logits.grad).all()


def test_build_loss():
    ce = build_loss(LossConfig(label_smoothing=0.2))
    torch.testing.assert_close(
        ce(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS, label_smoothing=0.2)
    )
    focal = build_loss(LossConfig(kind="focal", gamma=1.0, class_weights=[1, 2, 3]))
    assert isinstance(focal, FocalLoss)
    assert focal.alpha.tolist() == [1.0, 2.0, 3.0]
    weighted = build_loss(LossConfig(), class_weights=torch.tensor([3.0, 1.0, 1.0]))
    assert weighted(LOGITS, TARGETS) != ce(LOGITS, TARGETS)


def test_class_weights_are_buffers_that_move_with_the_loss():
    loss = build_loss(LossConfig(class_weights=[1.0, 2.0]))
    assert "weight" in dict(loss.named_buffers())
    assert "alpha" in dict(FocalLoss(alpha=[1.0, 2.0]).named_buffers())


def test_bad_loss_arguments():
    with pytest.raises(ConfigError, match="one place"):
        build_loss(LossConfig(class_weights=[1.0, 1.0]), class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="non-negative"):
        cross_entropy_loss(class_weights=[1.0, -2.0])
    with pytest.raises(ConfigError, match="label_smoothing"):
        cross_entropy_loss(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        build_loss(LossConfig.model_construct(kind="hinge", class_weights=None))


def test_combined_loss_adds_weighted_aux_losses():
    loss_fn = cross_entropy_loss()
    image_logits = torch.tensor([[0.0, 1.0, 0.0]] * 3)
    text_logits = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    outputs = {
        "logits": LOGITS,
        "image_logits": image_logits,
        "text_logits": text_logits,
    }

    total = combined_loss(outputs, TARGETS, loss_fn, {"image": 0.5, "text": 0.25})

    expected = (
        loss_fn(LOGITS, TARGETS)
        + 0.5 * loss_fn(image_logits, TARGETS)
        + 0.25 * loss_fn(text_logits, TARGETS)
    )
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(
        combined_loss(outputs, TARGETS, loss_fn), loss_fn(LOGITS, TARGETS)
    )


def test_combined_loss_counts_only_samples_that_have_the_modality():
    loss_fn = cross_entropy_loss()
    text_logits = torch.tensor([[5.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    present = torch.tensor([True, False, True])
    outputs = {"logits": LOGITS, "text_logits": text_logits, "text_present": present}

    total = combined_loss(outputs, TARGETS, loss_fn, {"text": 1.0})

    expected = loss_fn(LOGITS, TARGETS) + loss_fn(
        text_logits[present], TARGETS[present]
    )
    torch.testing.assert_close(total, expected)

    outputs["text_present"] = torch.zeros(3, dtype=torch.bool)
    torch.testing.assert_close(
        combined_loss(outputs, TARGETS, loss_fn, {"text": 1.0}),
        loss_fn(LOGITS, TARGETS),
    )


def test_combined_loss_needs_the_weighted_head():
    with pytest.raises(ConfigError, match="image_logits"):
        combined_loss({"logits": LOGITS}, TARGETS, cross_entropy_loss(), {"image": 0.3})
    # A zero weight needs no head.
    total = combined_loss(
        {"logits": LOGITS}, TARGETS, cross_entropy_loss(), {"image": 0}
    )
    torch.testing.assert_close(total, F.cross_entropy(LOGITS, TARGETS))
