import hashlib
import json

import pytest

from mlkit.deploy.gate import (
    check_gated_model,
    gated_image_tag,
    image_reference,
)
from mlkit.errors import ConfigError, DataError
from mlkit.evaluate.gate import write_gate
from mlkit.train.checkpoint import CARD_NAME, WEIGHTS_NAME

GIT_SHA = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"


def make_model_dir(path, weights=b"not really safetensors"):
    """A model directory as read_card sees it: weights plus a card naming
    their sha256 (the bytes are never parsed here)."""
    path.mkdir(parents=True)
    (path / WEIGHTS_NAME).write_bytes(weights)
    sha = hashlib.sha256(weights).hexdigest()
    (path / CARD_NAME).write_text(json.dumps({"weights_sha256": sha}))
    return sha


def make_gate(path, model_sha256, macro_f1=0.8):
    report = {
        "model_sha256": model_sha256,
        "manifest_sha256": "d" * 64,
        "synthetic": True,
        "metrics": {"macro_f1": macro_f1},
    }
    return write_gate(path, report, min_macro_f1=0.5)


def make_gated_model(tmp_path):
    """(model_dir, gate_file, model sha256) of a model that passed the gate."""
    model_dir = tmp_path / "model"
    sha = make_model_dir(model_dir)
    gate_file = make_gate(tmp_path / "gate.json", sha)
    return model_dir, gate_file, sha


def test_a_gated_model_gives_its_sha(tmp_path):
    model_dir, gate_file, sha = make_gated_model(tmp_path)
    assert check_gated_model(model_dir, gate_file) == sha


def test_a_gate_for_another_model_names_both_shas(tmp_path):
    model_dir, _, sha = make_gated_model(tmp_path)
    other = make_gate(tmp_path / "other-gate.json", "9" * 64)
    with pytest.raises(DataError, match="the gate file is for another model") as info:
        check_gated_model(model_dir, other)
    assert sha in str(info.value) and "9" * 64 in str(info.value)


def test_a_failed_gate_is_refused(tmp_path):
    model_dir, _, sha = make_gated_model(tmp_path)
    gate = tmp_path / "failed.json"
    record = json.loads((tmp_path / "gate.json").read_text())
    gate.write_text(json.dumps({**record, "passed": False, "measured": 0.3}))
    with pytest.raises(DataError, match="does not record a pass"):
        check_gated_model(model_dir, gate)


def test_a_missing_gate_is_refused(tmp_path):
    model_dir, _, _ = make_gated_model(tmp_path)
    with pytest.raises(DataError, match="gate file not found"):
        check_gated_model(model_dir, tmp_path / "nope.json")


def test_a_pickle_file_in_the_model_dir_is_refused(tmp_path):
    model_dir, gate_file, _ = make_gated_model(tmp_path)
    (model_dir / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match=r"pickle-like file\(s\) model.pt"):
        check_gated_model(model_dir, gate_file)


def test_weights_changed_after_the_gate_are_refused(tmp_path):
    model_dir, gate_file, sha = make_gated_model(tmp_path)
    (model_dir / WEIGHTS_NAME).write_bytes(b"other bytes")
    with pytest.raises(DataError, match="weights do not match the model card") as info:
        check_gated_model(model_dir, gate_file)
    assert sha in str(info.value)


@pytest.mark.parametrize("card", [{}, {"weights_sha256": "abc"}])
def test_a_card_without_a_valid_sha_is_refused(tmp_path, card):
    model_dir, gate_file, _ = make_gated_model(tmp_path)
    (model_dir / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(DataError, match="model card has no valid weights_sha256"):
        check_gated_model(model_dir, gate_file)


def test_a_missing_model_dir_is_refused(tmp_path):
    _, gate_file, _ = make_gated_model(tmp_path)
    with pytest.raises(DataError, match="checkpoint directory not found"):
        check_gated_model(tmp_path / "absent", gate_file)


def test_gated_image_tag():
    sha = "ab" * 32
    assert gated_image_tag(GIT_SHA, sha) == f"{GIT_SHA}-{sha[:12]}"
    assert gated_image_tag(GIT_SHA[:7].upper(), sha) == f"{GIT_SHA[:7]}-{sha[:12]}"


@pytest.mark.parametrize(
    ("git_sha", "model_sha", "message"),
    [
        ("main", "ab" * 32, "not a git commit sha"),
        ("abc", "ab" * 32, "not a git commit sha"),
        (GIT_SHA, "ab" * 31, "not a sha256 hex digest"),
    ],
)
def test_gated_image_tag_refuses_bad_shas(git_sha, model_sha, message):
    with pytest.raises(ConfigError, match=message):
        gated_image_tag(git_sha, model_sha)


def test_image_reference():
    sha = "ab" * 32
    assert image_reference("localhost:5000/mlkit/serve", GIT_SHA, sha) == (
        f"localhost:5000/mlkit/serve:{GIT_SHA}-{sha[:12]}"
    )
    with pytest.raises(ConfigError, match="already has a tag or digest"):
        image_reference("r.io/serve:v1", GIT_SHA, sha)
