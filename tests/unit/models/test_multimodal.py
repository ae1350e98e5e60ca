from __future__ import annotations

import pytest
import torch

from mlkit.errors import ConfigError, DataError
from mlkit.models.backbones import build_backbone
from mlkit.models.config import (
    FusionConfig,
    ModalityDropoutConfig,
    ModelConfig,
    VisionConfig,
    parse_model_config,
)
from mlkit.models.losses import build_loss, combined_loss
from mlkit.models.multimodal import MultimodalClassifier, build_model

TEXT_DIM = 8
N_CLASSES = 4
TINY_VISION = VisionConfig(arch="small_cnn", width=4, depth=2, blocks=1)


def config(**fusion) -> ModelConfig:
    fusion = {"proj_dim": 8, "hidden_dim": 8, "dropout": 0.0, **fusion}
    return ModelConfig(vision=TINY_VISION, fusion=FusionConfig(**fusion))


def batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n, 3, 16, 16, generator=g),
        "text": torch.randn(n, TEXT_DIM, generator=g),
        "has_text": torch.ones(n, dtype=torch.bool),
    }


def model(**fusion) -> MultimodalClassifier:
    torch.manual_seed(0)
    return build_model(config(**fusion), TEXT_DIM, N_CLASSES)


@pytest.mark.parametrize("fusion", ["concat_mlp", "weighted_sum"])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm", "none"])
@pytest.mark.parametrize("modalities", [("image",), ("text",), ("image", "text")])
def test_output_shapes(fusion, norm, modalities):
    net = model(fusion=fusion, norm=norm, modalities=modalities, aux_heads=True)
    out = net(**batch())

    assert out["logits"].shape == (4, N_CLASSES)
    for modality in ("image", "text"):
        if modality in modalities:
            assert out[f"{modality}_logits"].shape == (4, N_CLASSES)
            assert out[f"{modality}_present"].dtype == torch.bool
        else:
            assert f"{modality}_logits" not in out


def test_no_aux_outputs_without_aux_heads():
    net = model()
    assert set(net(**batch())) == {"logits"}
    assert net.aux_weights == {}
    assert model(aux_heads=True, aux_weights={"text": 0.7}).aux_weights == {
        "image": 0.0,
        "text": 0.7,
    }


def test_backbone_is_the_attribute_named_backbone():
    net = model()
    names = [name for name, _ in net.named_parameters()]
    backbone_names = {n for n in names if n.startswith("backbone.")}
    assert backbone_names
    assert {
        f"backbone.{n}" for n, _ in net.backbone.named_parameters()
    } == backbone_names
    assert len(backbone_names) < len(names)


def test_eval_is_deterministic_and_ignores_modality_dropout():
    drop = ModalityDropoutConfig(p_image=0.5, p_text=0.5)
    net = model(modality_dropout=drop, dropout=0.3).eval()
    inputs = batch()
    first = net(**inputs)["logits"]
    for _ in range(3):
        assert torch.equal(net(**inputs)["logits"], first)

    plain = model(dropout=0.3).eval()
    plain.load_state_dict(net.state_dict())
    assert torch.equal(plain(**inputs)["logits"], first)


def test_modality_dropout_acts_in_training():
    drop = ModalityDropoutConfig(p_image=0.5, p_text=0.5)
    net = model(modality_dropout=drop, norm="layernorm").train()
    inputs = batch(16)
    torch.manual_seed(1)
    a = net(**inputs)["logits"]
    torch.manual_seed(2)
    b = net(**inputs)["logits"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("dropped", ["image", "text"])
def test_certain_modality_dropout_makes_training_output_independent(dropped):
    drop = ModalityDropoutConfig(**{f"p_{dropped}": 1.0})
    net = model(modality_dropout=drop, norm="layernorm").train()
    inputs, other = batch(seed=0), batch(seed=1)
    changed = {**inputs, dropped: other[dropped]}

    same = net(**inputs)["logits"]
    torch.testing.assert_close(net(**changed)["logits"], same)

    net.eval()
    assert not torch.allclose(net(**changed)["logits"], net(**inputs)["logits"])


def test_modality_dropout_never_hides_both():
    drop = ModalityDropoutConfig(p_image=0.5, p_text=0.5)
    net = model(modality_dropout=drop, fusion="weighted_sum", norm="layernorm").train()
    inputs = batch(64)
    torch.manual_seed(0)
    features = [torch.ones(64, 8), torch.ones(64, 8)]
    image, text = net._modality_dropout(features)
    kept_image = image[:, 0] == 1
    kept_text = text[:, 0] == 1
    assert (kept_image | kept_text).all()
    assert (~kept_image).any() and (~kept_text).any()
    assert net(**inputs)["logits"].shape == (64, N_CLASSES)


@pytest.mark.parametrize("fusion", ["concat_mlp", "weighted_sum"])
def test_image_only_model_ignores_text(fusion):
    net = model(modalities=("image",), fusion=fusion).eval()
    inputs, other = batch(seed=0), batch(seed=1)
    expected = net(**inputs)["logits"]
    assert net.text_proj is None
    torch.testing.assert_close(net(image=inputs["image"])["logits"], expected)
    torch.testing.assert_close(
        net(image=inputs["image"], text=other["text"])["logits"], expected
    )


@pytest.mark.parametrize("fusion", ["concat_mlp", "weighted_sum"])
def test_text_only_model_ignores_images_and_has_no_backbone(fusion):
    net = model(modalities=("text",), fusion=fusion).eval()
    inputs = batch()
    expected = net(**inputs)["logits"]
    assert net.backbone is None
    assert not any(n.startswith("backbone.") for n, _ in net.named_parameters())
    torch.testing.assert_close(net(text=inputs["text"])["logits"], expected)
    garbage = torch.randn(2, 1, 5, 5)  # not even the right shape: never looked at
    torch.testing.assert_close(
        net(image=garbage, text=inputs["text"])["logits"], expected
    )


def test_samples_without_text_ignore_the_text_vector():
    net = model().eval()
    inputs = batch()
    inputs["has_text"] = torch.tensor([True, False, True, False])
    other_text = torch.randn(4, TEXT_DIM)
    a = net(**inputs)["logits"]
    b = net(**{**inputs, "text": other_text})["logits"]
    torch.testing.assert_close(a[1], b[1])
    torch.testing.assert_close(a[3], b[3])
    assert not torch.allclose(a[0], b[0])


def test_zero_text_rows_count_as_missing_when_has_text_is_omitted():
    net = model().eval()
    inputs = batch()
    inputs["text"][2] = 0
    inputs["has_text"][2] = False
    explicit = net(**inputs)["logits"]
    implicit = net(image=inputs["image"], text=inputs["text"])["logits"]
    torch.testing.assert_close(implicit, explicit)


def test_missing_modality_input_is_a_zero_feature():
    net = model(aux_heads=True).eval()
    inputs = batch()
    no_text = net(image=inputs["image"])
    masked = net(**{**inputs, "has_text": torch.zeros(4, dtype=torch.bool)})
    torch.testing.assert_close(no_text["logits"], masked["logits"])
    assert not no_text["text_present"].any()
    no_image = net(text=inputs["text"], has_text=inputs["has_text"])
    assert not no_image["image_present"].any()
    assert no_image["logits"].shape == (4, N_CLASSES)


def test_weighted_sum_weights_sum_to_one():
    net = model(fusion="weighted_sum")
    weights = net.modality_weights()
    assert weights.shape == (2,)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    with torch.no_grad():
        net.fusion_logits.copy_(torch.tensor([2.0, -1.0]))
    weights = net.modality_weights()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert weights[0] > weights[1]
    assert model(fusion="weighted_sum", modalities=("text",)).modality_weights() == 1
    with pytest.raises(ConfigError, match="weighted_sum"):
        model(fusion="concat_mlp").modality_weights()


def test_l2_normalized_projections_have_unit_norm():
    net = model(l2_normalize=True).eval()
    features = net.text_proj(torch.randn(5, TEXT_DIM))
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5))


def test_channels_last_model_gives_the_same_logits():
    net = model().eval()
    inputs = batch()
    expected = net(**inputs)["logits"]
    net = net.to(memory_format=torch.channels_last)
    image = inputs["image"].contiguous(memory_format=torch.channels_last)
    got = net(**{**inputs, "image": image})["logits"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_rebuilt_from_stored_config_loads_the_same_weights():
    cfg = config(aux_heads=True, fusion="weighted_sum")
    net = build_model(cfg, TEXT_DIM, N_CLASSES).eval()
    rebuilt = build_model(
        parse_model_config(cfg.model_dump(mode="json")), TEXT_DIM, N_CLASSES
    ).eval()
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    inputs = batch()
    torch.testing.assert_close(rebuilt(**inputs)["logits"], net(**inputs)["logits"])


def test_tiny_model_overfits_eight_samples():
    torch.manual_seed(0)
    cfg = config(aux_heads=True)
    net = build_model(cfg, TEXT_DIM, N_CLASSES).train()
    loss_fn = build_loss(cfg.loss)
    inputs = batch(8)
    targets = torch.arange(8) % N_CLASSES
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)

    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = combined_loss(net(**inputs), targets, loss_fn, net.aux_weights)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.3 * losses[0]
    net.eval()
    assert (net(**inputs)["logits"].argmax(1) == targets).all()


def test_bad_construction():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model(config(), TEXT_DIM, 1)
    with pytest.raises(ConfigError, match="text_dim"):
        build_model(config(), 0, N_CLASSES)
    with pytest.raises(ConfigError, match="needs a backbone"):
        MultimodalClassifier(None, TEXT_DIM, N_CLASSES, FusionConfig())
    with pytest.raises(ConfigError, match="takes no backbone"):
        MultimodalClassifier(
            build_backbone(TINY_VISION),
            TEXT_DIM,
            N_CLASSES,
            FusionConfig(modalities=("text",)),
        )
    with pytest.raises(ConfigError, match="out_dim"):
        MultimodalClassifier(torch.nn.Identity(), TEXT_DIM, N_CLASSES)
    unknown = FusionConfig.model_construct(
        **{**FusionConfig().model_dump(), "fusion": "attention"}
    )
    with pytest.raises(ConfigError, match="unknown fusion 'attention'"):
        MultimodalClassifier(build_backbone(TINY_VISION), TEXT_DIM, N_CLASSES, unknown)


def test_bad_inputs():
    net = model().eval()
    inputs = batch()
    with pytest.raises(DataError, match=r"\(batch, 8\)"):
        net(image=inputs["image"], text=torch.randn(4, 5))
    with pytest.raises(DataError, match="batch size"):
        net(image=inputs["image"], text=torch.randn(3, TEXT_DIM))
    with pytest.raises(DataError, match="no input"):
        net()
