from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader

from mlkit.errors import ConfigError, DataError, MlkitError
from mlkit.train import (
    TrainConfig,
    Trainer,
    load_checkpoint,
    parse_train_config,
    warmup_cosine,
)
from mlkit.train.trainer import HISTORY_COLUMNS, TIMING_COLUMNS
from tests.unit.train.tiny import TinyData, TinyModel, make_loaders, make_model

FAST = {"batch_size": 16, "lr_head": 0.05, "lr_backbone": 0.01, "warmup_epochs": 0.5}


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, **FAST, **overrides})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def run(tmp_path, cfg, *, seed=0, **fit_kwargs):
    trainer = Trainer(make_model(seed), cfg, device="cpu")
    train, val = make_loaders(cfg)
    history = trainer.fit(train, val, tmp_path, **fit_kwargs)
    return trainer, history


# ------------------------------------------------------------------- config


def test_config_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(ValidationError):
        TrainConfig(epochs=2, learning_rate=0.1)

    with pytest.raises(ConfigError) as info:
        parse_train_config(
            {"epochs": "ten", "bogus": 1, "lr_head": -1}, source="x.yaml"
        )

    message = str(info.value)
    assert message.startswith("x.yaml: invalid")
    assert "epochs" in message and "bogus" in message and "lr_head" in message


def test_trainer_accepts_a_mapping_and_validates_it():
    trainer = Trainer(make_model(), {"epochs": 2}, device="cpu")
    assert trainer.config.epochs == 2

    with pytest.raises(ConfigError, match="early_stopping"):
        Trainer(make_model(), {"early_stopping": 3}, device="cpu")


def test_amp_is_off_on_cpu():
    trainer = Trainer(make_model(), TrainConfig(amp=True), device="cpu")
    assert not trainer.use_amp


# ----------------------------------------------------------------- schedule


def test_warmup_then_cosine():
    factors = [warmup_cosine(step, 4, 20) for step in range(20)]

    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert 0 < factors[-1] < 0.01
    assert warmup_cosine(0, 0, 10) == 1.0
    assert warmup_cosine(5, 10, 10) == 0.6


def test_learning_rates_follow_groups_and_schedule(tmp_path):
    cfg = config(lr_backbone=0.001, lr_head=0.01, warmup_epochs=0)
    _, history = run(tmp_path, cfg)

    steps = 3 * 4
    for row in history.epochs:
        factor = warmup_cosine(row["step"] - 1, 0, steps)
        assert row["lr_backbone"] == pytest.approx(0.001 * factor)
        assert row["lr_head"] == pytest.approx(0.01 * factor)


def test_optimizer_groups_split_backbone_head_and_decay():
    trainer = Trainer(make_model(), config(weight_decay=0.1), device="cpu")
    optimizer, names, _ = trainer._build_optimizer()

    pairs = zip(optimizer.param_groups, names, strict=True)
    groups = {g["name"]: (g, n) for g, n in pairs}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"][1] == ["backbone.1.weight"]
    assert groups["backbone"][0]["lr"] == 0.01
    assert groups["head"][0]["lr"] == 0.05
    assert groups["head"][0]["weight_decay"] == 0.1
    assert groups["head_no_decay"][0]["weight_decay"] == 0.0
    assert "head.0.weight" in groups["head_no_decay"][1]  # LayerNorm scale


def test_frozen_backbone_does_not_move(tmp_path):
    model = make_model()
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    before = weights(model.backbone)
    cfg = config(epochs=1)
    train, val = make_loaders(cfg)

    Trainer(model, cfg, device="cpu").fit(train, val, tmp_path)

    assert_same_weights(before, weights(model.backbone))


def test_gradients_are_clipped(tmp_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        norms.append(max_norm)
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run(tmp_path / "a", config(epochs=1, grad_clip=0.25))
    assert norms == [0.25] * 4

    norms.clear()
    run(tmp_path / "b", config(epochs=1, grad_clip=None))
    assert norms == []


# ---------------------------------------------------------------------- fit


def test_fit_writes_history_best_checkpoint_and_state(tmp_path):
    trainer, history = run(tmp_path, config(), card={"hidden": 6})

    assert [row["epoch"] for row in history.epochs] == [1, 2, 3]
    with open(tmp_path / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [float(r["val_macro_f1"]) for r in rows] == [
        r["val_macro_f1"] for r in history.epochs
    ]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_epoch"] == history.best_epoch
    assert without_timing(saved["epochs"]) == without_timing(history.epochs)

    best_row = history.epochs[history.best_epoch - 1]
    assert best_row["val_macro_f1"] == max(r["val_macro_f1"] for r in history.epochs)
    assert history.best_val_macro_f1 == best_row["val_macro_f1"]

    best, card = load_checkpoint(
        history.best_checkpoint, lambda c: TinyModel(hidden=c["hidden"])
    )
    assert card["training"]["epoch"] == history.best_epoch
    assert card["training"]["config"]["epochs"] == 3
    assert_same_weights(weights(best), weights(trainer.model))
    assert (tmp_path / "state" / "training_state.json").is_file()
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


def test_fit_learns_the_tiny_task(tmp_path):
    trainer, history = run(tmp_path, config(epochs=6))

    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert history.best_val_macro_f1 > 0.6


def test_model_ends_with_the_best_not_the_last_weights(tmp_path):
    trainer, history = run(tmp_path, config(epochs=6, lr_head=0.5, lr_backbone=0.5))
    assert history.best_epoch < 6, "the setup should make a later epoch worse"

    last = {
        k.removeprefix("model."): v
        for k, v in load_file(tmp_path / "state" / "training_state.safetensors").items()
        if k.startswith("model.")
    }
    best = weights(trainer.model)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    metrics = trainer.validate(make_loaders(trainer.config)[1])
    assert metrics["macro_f1"] == pytest.approx(history.best_val_macro_f1)


def test_early_stopping_when_validation_does_not_improve(tmp_path):
    cfg = config(epochs=5, lr_head=1e-12, lr_backbone=1e-12, early_stopping_patience=2)
    _, history = run(tmp_path, cfg)

    assert history.stopped_early
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3]
    assert history.best_epoch == 1


def test_two_fits_with_the_same_seed_are_bit_identical(tmp_path):
    first, h1 = run(tmp_path / "a", config())
    second, h2 = run(tmp_path / "b", config())
    third, _ = run(tmp_path / "c", config(seed=1))

    assert_same_weights(weights(first.model), weights(second.model))
    assert without_timing(h1.epochs) == without_timing(h2.epochs)
    a, c = weights(first.model), weights(third.model)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_fit_restores_the_deterministic_setting(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()

    run(tmp_path, config(epochs=1))

    assert torch.are_deterministic_algorithms_enabled() == before


# ------------------------------------------------------------------- resume


class CrashingLoss:
    """Cross-entropy that raises on the n-th training call (grad enabled)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.training_calls = 0

    def __call__(self, outputs, target):
        if torch.is_grad_enabled():
            self.training_calls += 1
            if self.training_calls == self.crash_at:
                raise KeyboardInterrupt("simulated crash")
        return F.cross_entropy(outputs["logits"], target)


def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    cfg = config(epochs=4, early_stopping_patience=None)
    full = Trainer(make_model(), cfg, CrashingLoss(), device="cpu")
    full_history = full.fit(*make_loaders(cfg), tmp_path / "full")

    # 4 steps per epoch: the 11th step is in epoch 3, after epoch 2 was saved.
    crashed = Trainer(make_model(), cfg, CrashingLoss(crash_at=11), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(*make_loaders(cfg), tmp_path / "resumed")
    state = json.loads((tmp_path / "resumed/state/training_state.json").read_text())
    assert state["epoch"] == 2

    resumed = Trainer(make_model(seed=99), cfg, CrashingLoss(), device="cpu")
    history = resumed.fit(*make_loaders(cfg), tmp_path / "resumed", resume=True)

    assert resumed.loss_fn.training_calls == 2 * 4
    assert without_timing(history.epochs) == without_timing(full_history.epochs)
    assert_same_weights(weights(resumed.model), weights(full.model))
    last_full = load_file(tmp_path / "full/state/training_state.safetensors")
    last_resumed = load_file(tmp_path / "resumed/state/training_state.safetensors")
    assert_same_weights(last_full, last_resumed)


def test_resume_of_a_finished_run_trains_no_more(tmp_path):
    cfg = config(epochs=2)
    trainer, first = run(tmp_path, cfg)

    again = Trainer(make_model(seed=5), cfg, CrashingLoss(), device="cpu")
    history = again.fit(*make_loaders(cfg), tmp_path, resume=True)

    assert again.loss_fn.training_calls == 0
    assert without_timing(history.epochs) == without_timing(first.epochs)
    assert_same_weights(weights(again.model), weights(trainer.model))


def test_resume_without_state_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no training state to resume"):
        run(tmp_path, config(epochs=1), resume=True)


def test_resume_with_a_changed_config_names_the_change(tmp_path):
    run(tmp_path, config(epochs=1))

    with pytest.raises(ConfigError, match=r"lr_head 0\.05 -> 0\.1"):
        run(tmp_path, config(epochs=1, lr_head=0.1), resume=True)


def test_resume_with_a_damaged_state_is_an_error(tmp_path):
    run(tmp_path, config(epochs=1))
    tensors = tmp_path / "state" / "training_state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"\0\0\0\0")

    with pytest.raises(DataError, match="sha256"):
        run(tmp_path, config(epochs=1), resume=True)


# --------------------------------------------------------------- evaluation


def test_predict_returns_probabilities_in_loader_order(tmp_path):
    trainer, _ = run(tmp_path, config(epochs=1))
    data = TinyData(20, seed=4)

    probs, y_true = trainer.predict(DataLoader(data, batch_size=8))

    assert probs.shape == (20, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(y_true, data.target.numpy())


def test_validate_matches_sklearn(tmp_path):
    trainer, _ = run(tmp_path, config(epochs=1))
    loader = DataLoader(TinyData(40, seed=5), batch_size=16)

    metrics = trainer.validate(loader)
    probs, y_true = trainer.predict(loader)

    y_pred = probs.argmax(axis=1)
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(y_true == y_pred)))
    assert metrics["n"] == 40 and math.isfinite(metrics["loss"])


def test_test_needs_rows(tmp_path):
    trainer = Trainer(make_model(), config(), device="cpu")

    with pytest.raises(DataError, match="no test split"):
        trainer.test(None)
    with pytest.raises(DataError, match="test loader yielded no rows"):
        trainer.test(DataLoader(TinyData(0), batch_size=4))
    assert trainer.test(DataLoader(TinyData(8), batch_size=4))["n"] == 8


def test_empty_training_loader_is_an_error(tmp_path):
    trainer = Trainer(make_model(), config(), device="cpu")
    val = DataLoader(TinyData(8), batch_size=4)

    with pytest.raises(DataError, match="training loader yields no batches"):
        trainer.fit(DataLoader(TinyData(0), batch_size=4), val, tmp_path)


def test_batches_and_outputs_must_follow_the_contract():
    trainer = Trainer(make_model(), config(), device="cpu")
    data = TinyData(4)
    as_tuples = [(data.image, data.text, data.target)]
    no_target = [{"image": data.image, "text": data.text, "has_text": data.has_text}]

    with pytest.raises(DataError, match="must be a dict"):
        trainer.validate(as_tuples)
    with pytest.raises(DataError, match="no 'target'"):
        trainer.validate(no_target)

    class Bare(TinyModel):
        def forward(self, image, text, has_text):
            return super().forward(image, text, has_text)["logits"]

    bare = Trainer(Bare(), config(), device="cpu")
    with pytest.raises(MlkitError, match="must return a dict with 'logits'"):
        bare.validate(DataLoader(data, batch_size=4))


def test_history_times_the_data_loader_separately(tmp_path):
    cfg = config(epochs=2)
    _, history = run(tmp_path, cfg)
    train, _ = make_loaders(cfg)
    for row in history.epochs:
        assert row["train_samples"] == len(train.dataset)
        assert 0 <= row["data_seconds"] <= row["train_seconds"] <= row["seconds"]
