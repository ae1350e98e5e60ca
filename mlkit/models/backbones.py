"""Image backbones: a plain CNN and a ResNet with basic residual blocks.

Written with torch only. Both map an image batch ``(B, 3, H, W)`` to a feature
vector ``(B, out_dim)``. They use only convolutions, batch norm, ReLU and
pooling, so they run unchanged in ``torch.channels_last`` memory format (faster
on GPUs with tensor cores) and accept any input size from a few pixels up.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mlkit.errors import ConfigError, DataError
from mlkit.models.config import VisionConfig

log = logging.getLogger(__name__)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the batch norm that always follows has its own.
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
        )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut connection around them.

    The shortcut is the identity, or a strided 1x1 convolution when the block
    changes resolution or width. The last batch norm starts at zero, so a new
    block is the identity and deep stacks train from the first step.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class GlobalPool(nn.Module):
    """Feature map ``(B, C, H, W)`` to vector: average, maximum, or both."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("avg", "max", "concat"):
            raise ConfigError(f"unknown pooling {mode!r}; known: avg, max, concat")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.mode == "max":
            return torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        avg = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        top = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        return torch.cat([avg, top], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class Backbone(nn.Module):
    """Stem, stages, global pooling and dropout; ``out_dim`` features out.

    Subclasses fill ``stages``. Input must be ``(B, 3, H, W)`` floats
    (normalized images); anything else raises ``DataError``.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = self._stem(cfg)
        self.stages = nn.Sequential()
        self.pool = GlobalPool(cfg.pooling)
        self.dropout = nn.Dropout(cfg.dropout)
        channels = cfg.width * 2 ** (cfg.depth - 1)
        #: Width of the feature vector that ``forward`` returns.
        self.out_dim = channels * (2 if cfg.pooling == "concat" else 1)

    @staticmethod
    def _stem(cfg: VisionConfig) -> nn.Sequential:
        stem = nn.Sequential(ConvBNReLU(3, cfg.width, stride=min(cfg.stem_stride, 2)))
        if cfg.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        return stem

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataError(
                "backbone input has the wrong shape",
                expected="(batch, 3, height, width)",
                got=str(tuple(x.shape)),
            )
        x = self.stages(self.stem(x))
        return self.dropout(self.pool(x))


def _add_stages(backbone: Backbone, cfg: VisionConfig, block: type[nn.Module]) -> None:
    """Per stage, ``cfg.blocks`` blocks of ``block``; every stage after the first
    starts with a stride-2 block and doubles the width."""
    c_in = cfg.width
    for i in range(cfg.depth):
        c_out = cfg.width * 2**i
        layers = [
            block(c_in if j == 0 else c_out, c_out, 2 if i and not j else 1)
            for j in range(cfg.blocks)
        ]
        backbone.stages.append(nn.Sequential(*layers))
        c_in = c_out


class SmallCNN(Backbone):
    """Plain CNN: per stage, ``blocks`` conv-BN-ReLU layers, the first strided."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        _add_stages(self, cfg, ConvBNReLU)
        self._init_weights()


class ResNet(Backbone):
    """ResNet of basic blocks: ``blocks`` per stage, the first strided."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        _add_stages(self, cfg, BasicBlock)
        self._init_weights()


_ARCHS: dict[str, type[Backbone]] = {"small_cnn": SmallCNN, "resnet": ResNet}


def fold_batch_norm(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` for inference, each batch norm folded into its conv.

    In eval mode a batch norm after a convolution is an affine map per
    channel, so it can be merged into the convolution's weights and bias: one
    pass over the feature map instead of two, with the same results up to
    float rounding (the folded weights round differently in the last bits).
    The copy is in eval mode and must not be trained: it has no batch norm
    left to update. ``backbone`` itself is not changed.
    """
    folded = copy.deepcopy(backbone).eval()
    for module in folded.modules():
        if isinstance(module, BasicBlock):
            module.conv1 = fuse_conv_bn_eval(module.conv1, module.bn1)
            module.conv2 = fuse_conv_bn_eval(module.conv2, module.bn2)
            module.bn1 = module.bn2 = nn.Identity()  # type: ignore[assignment]
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, norm = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, norm)
                    module[i + 1] = nn.Identity()
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ConfigError(
            f"fold_batch_norm: batch norms not after a convolution: {', '.join(left)}"
        )
    return folded


def build_backbone(cfg: VisionConfig) -> Backbone:
    """The backbone ``cfg`` describes; it has an ``out_dim`` attribute.

    Raises ``ConfigError`` for an unknown architecture (possible only when the
    config was built without validation).
    """
    if cfg.arch not in _ARCHS:
        raise ConfigError(
            f"unknown vision arch {cfg.arch!r}; known: {', '.join(_ARCHS)}"
        )
    backbone = _ARCHS[cfg.arch](cfg)
    n_params = sum(p.numel() for p in backbone.parameters())
    log.info(
        "built %s backbone: width %s, depth %s, %s blocks/stage, %s pooling, "
        "out_dim %s, %s parameters",
        cfg.arch,
        cfg.width,
        cfg.depth,
        cfg.blocks,
        cfg.pooling,
        backbone.out_dim,
        n_params,
    )
    return backbone
