from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mlkit.errors import ConfigError
from mlkit.models.config import (
    FusionConfig,
    LossConfig,
    ModalityDropoutConfig,
    ModelConfig,
    VisionConfig,
    parse_model_config,
)


def test_config_round_trips_through_json():
    cfg = ModelConfig(
        vision=VisionConfig(arch="small_cnn", width=8, depth=3, pooling="concat"),
        fusion=FusionConfig(
            modalities=("text", "image"),
            fusion="weighted_sum",
            aux_heads=True,
            aux_weights={"image": 0.5},
            modality_dropout=ModalityDropoutConfig(p_image=0.2, p_text=0.3),
        ),
        loss=LossConfig(kind="focal", gamma=1.5, class_weights=[1.0, 2.0]),
    )
    stored = json.loads(json.dumps(cfg.model_dump(mode="json")))

    assert parse_model_config(stored) == cfg
    assert ModelConfig.model_validate(stored).model_dump() == cfg.model_dump()


def test_modalities_are_stored_in_canonical_order():
    assert FusionConfig(modalities=("text", "image")).modalities == ("image", "text")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"vision": {"arch": "vgg16"}}, "vision.arch"),
        ({"vision": {"dropout": -0.1}}, "vision.dropout"),
        ({"vision": {"width": 0}}, "vision.width"),
        ({"fusion": {"fusion": "attention"}}, "fusion.fusion"),
        ({"fusion": {"dropout": -0.5}}, "fusion.dropout"),
        ({"fusion": {"modalities": []}}, "fusion"),
        ({"fusion": {"modalities": ["image", "audio"]}}, "fusion.modalities"),
        ({"loss": {"kind": "hinge"}}, "loss.kind"),
        ({"vision": {"colour": "red"}}, "vision.colour"),
        ({"optimizer": "adam"}, "optimizer"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match="invalid model config") as info:
        parse_model_config(data)
    assert field in str(info.value)


def test_unknown_arch_is_a_validation_error_with_the_choices():
    with pytest.raises(ValidationError, match="small_cnn"):
        VisionConfig(arch="vgg16")


def test_modality_dropout_never_drops_both():
    with pytest.raises(ValidationError, match="at most 1"):
        ModalityDropoutConfig(p_image=0.6, p_text=0.5)


def test_modality_dropout_needs_two_modalities():
    with pytest.raises(ValidationError, match="needs both modalities"):
        FusionConfig(
            modalities=("image",),
            modality_dropout=ModalityDropoutConfig(p_image=0.5),
        )


def test_repeated_modality_rejected():
    with pytest.raises(ValidationError, match="repeats"):
        FusionConfig(modalities=("text", "text"))


def test_negative_aux_weight_rejected():
    with pytest.raises(ValidationError, match="negative"):
        FusionConfig(aux_weights={"text": -1.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "focal", "label_smoothing": 0.1}, "cross_entropy only"),
        ({"class_weights": []}, "empty"),
        ({"class_weights": [1.0, -1.0]}, "negative"),
        ({"class_weights": [0.0, 0.0]}, "all zero"),
    ],
)
def test_bad_loss_config(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        LossConfig(**kwargs)


def test_parse_passes_a_config_through():
    cfg = ModelConfig()
    assert parse_model_config(cfg) is cfg
