from __future__ import annotations

import pytest
import torch

from mlkit.errors import ConfigError, DataError
from mlkit.models.backbones import ResNet, SmallCNN, build_backbone, fold_batch_norm
from mlkit.models.config import VisionConfig


@pytest.mark.parametrize("arch", ["small_cnn", "resnet"])
@pytest.mark.parametrize("pooling", ["avg", "max", "concat"])
def test_output_shape_for_every_arch_and_pooling(arch, pooling):
    cfg = VisionConfig(arch=arch, width=4, depth=3, blocks=1, pooling=pooling)
    backbone = build_backbone(cfg).eval()

    features = backbone(torch.randn(2, 3, 32, 32))

    channels = 4 * 2**2
    assert backbone.out_dim == (2 * channels if pooling == "concat" else channels)
    assert features.shape == (2, backbone.out_dim)
    assert torch.isfinite(features).all()


def test_arch_selects_the_class():
    assert isinstance(build_backbone(VisionConfig(arch="small_cnn", width=2)), SmallCNN)
    assert isinstance(build_backbone(VisionConfig(arch="resnet", width=2)), ResNet)


@pytest.mark.parametrize("stem_stride", [1, 2, 4])
def test_any_small_input_size_works(stem_stride):
    cfg = VisionConfig(width=2, depth=4, blocks=1, stem_stride=stem_stride)
    backbone = build_backbone(cfg).eval()
    for size in (8, 17, 32):
        assert backbone(torch.randn(1, 3, size, size)).shape == (1, backbone.out_dim)


def test_width_depth_and_blocks_change_the_network():
    def n_params(**kw):
        return sum(p.numel() for p in build_backbone(VisionConfig(**kw)).parameters())

    base = n_params(width=4, depth=2, blocks=1)
    assert n_params(width=8, depth=2, blocks=1) > base
    assert n_params(width=4, depth=3, blocks=1) > base
    assert n_params(width=4, depth=2, blocks=2) > base
    resnet = build_backbone(VisionConfig(width=4, depth=2, blocks=3))
    assert sum(len(stage) for stage in resnet.stages) == 6


def test_new_residual_blocks_start_as_identity_of_the_shortcut():
    backbone = build_backbone(VisionConfig(width=4, depth=2, blocks=2))
    bn2 = [m.bn2.weight for m in backbone.modules() if hasattr(m, "bn2")]
    assert len(bn2) == 4
    assert all(bool((w == 0).all()) for w in bn2)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet"])
def test_channels_last_gives_the_same_features(arch):
    torch.manual_seed(0)
    cfg = VisionConfig(arch=arch, width=4, depth=2, pooling="concat")
    backbone = build_backbone(cfg).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = backbone(x)

    backbone = backbone.to(memory_format=torch.channels_last)
    got = backbone(x.contiguous(memory_format=torch.channels_last))

    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _trained_statistics(backbone: torch.nn.Module) -> None:
    """Batch norms as after training: statistics and affine terms not 0 and 1."""
    generator = torch.Generator().manual_seed(1)
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.2, generator=generator)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet"])
@pytest.mark.parametrize("stem_stride", [2, 4])
def test_folding_batch_norm_keeps_the_features(arch, stem_stride):
    torch.manual_seed(0)
    cfg = VisionConfig(arch=arch, width=4, depth=3, blocks=2, stem_stride=stem_stride)
    backbone = build_backbone(cfg)
    _trained_statistics(backbone)
    backbone.eval()
    x = torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        expected = backbone(x)
        folded = fold_batch_norm(backbone)
        got = folded(x)

    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    assert folded.out_dim == backbone.out_dim
    # The original is untouched: still has its batch norms and its outputs.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), expected, rtol=0, atol=0)


def test_a_batch_norm_without_a_convolution_before_it_is_refused():
    backbone = build_backbone(VisionConfig(arch="small_cnn", width=4, depth=2))
    backbone.pool = torch.nn.Sequential(torch.nn.BatchNorm2d(16), backbone.pool)
    with pytest.raises(ConfigError, match=r"not after a convolution: pool\.0"):
        fold_batch_norm(backbone)


def test_dropout_only_in_training():
    backbone = build_backbone(VisionConfig(width=4, depth=1, dropout=0.5))
    x = torch.randn(4, 3, 8, 8)
    backbone.eval()
    torch.testing.assert_close(backbone(x), backbone(x))
    backbone.train()
    torch.manual_seed(0)
    assert (backbone(x) == 0).any()


def test_wrong_input_shape_raises():
    backbone = build_backbone(VisionConfig(width=2, depth=1))
    with pytest.raises(DataError, match=r"\(batch, 3, height, width\)"):
        backbone(torch.randn(2, 1, 16, 16))
    with pytest.raises(DataError, match="wrong shape"):
        backbone(torch.randn(3, 16, 16))


def test_unvalidated_unknown_arch_raises_config_error():
    cfg = VisionConfig.model_construct(**{**VisionConfig().model_dump(), "arch": "vit"})
    with pytest.raises(ConfigError, match="unknown vision arch 'vit'"):
        build_backbone(cfg)


def test_unvalidated_unknown_pooling_raises_config_error():
    data = {**VisionConfig(width=2, depth=1).model_dump(), "pooling": "median"}
    with pytest.raises(ConfigError, match="unknown pooling 'median'"):
        build_backbone(VisionConfig.model_construct(**data))
