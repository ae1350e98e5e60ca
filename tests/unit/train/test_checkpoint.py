from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mlkit._io import sha256_file
from mlkit.errors import DataError
from mlkit.train import load_checkpoint, save_checkpoint
from mlkit.train.checkpoint import CARD_NAME, WEIGHTS_NAME
from tests.unit.train.tiny import TinyModel, make_model


def build(card):
    return TinyModel(hidden=card["hidden"])


def test_round_trip_restores_every_tensor_and_fills_the_card(tmp_path):
    model = make_model(seed=3, hidden=5)
    model.train()
    out = save_checkpoint(tmp_path / "ckpt", model, {"hidden": 5, "labels": ["a"]})

    loaded, card = load_checkpoint(out, build)

    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert not loaded.training
    assert card["hidden"] == 5 and card["labels"] == ["a"]
    assert card["weights_sha256"] == sha256_file(out / WEIGHTS_NAME)
    assert card["tensors"]["head.2.weight"] == [3, 5 + 8]
    assert "mlkit_version" in card and "created_at" in card
    assert card["git_commit"] is None or len(card["git_commit"]) == 40


def test_directory_holds_only_weights_and_card(tmp_path):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CARD_NAME, WEIGHTS_NAME]
    )


def test_reserved_card_keys_are_replaced(tmp_path):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4, "tensors": "x"})

    card = json.loads((tmp_path / CARD_NAME).read_text())
    assert isinstance(card["tensors"], dict)


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight

    save_checkpoint(tmp_path, model, {})
    loaded, _ = load_checkpoint(
        tmp_path, lambda card: nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    )

    assert torch.equal(loaded[1].weight, model[0].weight)


def test_changed_weights_are_refused_naming_file_and_both_hashes(tmp_path):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})
    expected = sha256_file(tmp_path / WEIGHTS_NAME)
    other = {k: v + 1 for k, v in make_model(hidden=4).state_dict().items()}
    save_file(other, str(tmp_path / WEIGHTS_NAME))
    actual = sha256_file(tmp_path / WEIGHTS_NAME)

    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path, build)

    message = str(info.value)
    assert str(tmp_path / WEIGHTS_NAME) in message
    assert expected in message and actual in message


@pytest.mark.parametrize("name", ["model.pt", "extra.PTH", "x.pkl", "opt.ckpt"])
def test_pickle_like_files_are_refused(tmp_path, name):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    built = []

    with pytest.raises(DataError, match="pickle-like") as info:
        load_checkpoint(tmp_path, lambda card: built.append(card) or build(card))

    assert name in str(info.value)
    assert built == []  # refused before anything was read


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})

    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path, lambda card: TinyModel(hidden=7))

    message = str(info.value)
    assert "'backbone.1.weight'" in message
    assert "[7, 12]" in message and "[4, 12]" in message


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    save_checkpoint(tmp_path, nn.Linear(3, 2), {})

    with pytest.raises(DataError, match="'extra' of the model is missing"):
        load_checkpoint(tmp_path, lambda card: _LinearWithBuffer())
    with pytest.raises(DataError, match="'bias' in the weights is not part"):
        load_checkpoint(tmp_path, lambda card: nn.Linear(3, 2, bias=False))


class _LinearWithBuffer(nn.Linear):
    def __init__(self) -> None:
        super().__init__(3, 2)
        self.register_buffer("extra", torch.zeros(1))


def test_missing_directory_card_or_weights_are_named(tmp_path):
    with pytest.raises(DataError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope", build)

    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(DataError, match="weights file missing"):
        load_checkpoint(tmp_path, build)

    (tmp_path / CARD_NAME).unlink()
    with pytest.raises(DataError, match="model card missing"):
        load_checkpoint(tmp_path, build)


def test_card_without_hash_is_not_loaded(tmp_path):
    save_checkpoint(tmp_path, make_model(hidden=4), {"hidden": 4})
    card = json.loads((tmp_path / CARD_NAME).read_text())
    del card["weights_sha256"]
    (tmp_path / CARD_NAME).write_text(json.dumps(card))

    with pytest.raises(DataError, match="no weights_sha256"):
        load_checkpoint(tmp_path, build)
