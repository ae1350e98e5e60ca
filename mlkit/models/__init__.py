"""The classifier: image backbones, transforms, image + text fusion, losses.

``build_model(ModelConfig(...), text_dim, n_classes)`` gives a
``MultimodalClassifier``; ``build_loss`` its loss; ``train_transform`` and
``eval_transform`` turn PIL images into the tensors it takes.
"""

from mlkit.models.backbones import (
    Backbone,
    BasicBlock,
    ResNet,
    SmallCNN,
    build_backbone,
)
from mlkit.models.config import (
    MODALITIES,
    FusionConfig,
    LossConfig,
    ModalityDropoutConfig,
    ModelConfig,
    VisionConfig,
    parse_model_config,
)
from mlkit.models.losses import FocalLoss, build_loss, combined_loss, cross_entropy_loss
from mlkit.models.multimodal import MultimodalClassifier, Projection, build_model
from mlkit.models.transforms import (
    AugmentConfig,
    EvalTransform,
    TrainTransform,
    compute_normalization,
    eval_transform,
    load_image,
    train_transform,
)

__all__ = [
    "MODALITIES",
    "AugmentConfig",
    "Backbone",
    "BasicBlock",
    "EvalTransform",
    "FocalLoss",
    "FusionConfig",
    "LossConfig",
    "ModalityDropoutConfig",
    "ModelConfig",
    "MultimodalClassifier",
    "Projection",
    "ResNet",
    "SmallCNN",
    "TrainTransform",
    "VisionConfig",
    "build_backbone",
    "build_loss",
    "build_model",
    "combined_loss",
    "compute_normalization",
    "cross_entropy_loss",
    "eval_transform",
    "load_image",
    "parse_model_config",
    "train_transform",
]
