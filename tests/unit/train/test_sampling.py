from __future__ import annotations

import numpy as np
import pytest
import torch

from mlkit.errors import DataError
from mlkit.train import TrainConfig, build_loader, class_balanced_sampler
from tests.unit.train.tiny import TinyData


def test_balanced_sampler_draws_classes_about_equally():
    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)
    sampler = class_balanced_sampler(targets, torch.Generator().manual_seed(0))

    drawn = targets[list(sampler)]

    assert len(drawn) == len(targets)
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.05)


def test_balanced_sampler_is_reproducible_with_its_generator():
    targets = torch.tensor([0, 0, 0, 1, 2, 2])

    def draw(seed):
        return list(
            class_balanced_sampler(targets, torch.Generator().manual_seed(seed))
        )

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_balanced_sampler_refuses_empty_or_negative_targets():
    with pytest.raises(DataError, match="empty"):
        class_balanced_sampler([], torch.Generator())
    with pytest.raises(DataError, match="non-negative"):
        class_balanced_sampler([0, -1], torch.Generator())


def test_train_loader_order_is_seeded_and_eval_loader_keeps_order():
    data = TinyData(32)
    cfg = TrainConfig(batch_size=8, seed=1)

    def order(loader):
        return torch.cat([batch["target"] for batch in loader]).tolist()

    first = build_loader(data, cfg, train=True)
    second = build_loader(data, cfg, train=True)
    assert [b["text"].tolist() for b in first] == [b["text"].tolist() for b in second]
    other = build_loader(data, TrainConfig(batch_size=8, seed=2), train=True)
    assert [b["text"].tolist() for b in first] != [b["text"].tolist() for b in other]
    assert order(build_loader(data, cfg, train=False)) == data.target.tolist()


def test_class_balanced_loader_uses_the_sampler_and_needs_targets():
    data = TinyData(32)
    cfg = TrainConfig(batch_size=8, class_balanced=True)

    with pytest.raises(DataError, match="no targets"):
        build_loader(data, cfg, train=True)
    loader = build_loader(data, cfg, train=True, targets=data.target)
    assert isinstance(loader.sampler, torch.utils.data.WeightedRandomSampler)
    assert loader.sampler.generator is loader.generator
