"""Deploy only the model that passed the evaluation gate, under a traceable tag.

``check_gated_model`` ties three things together before anything is built or
rendered: the ``gate.json`` written by the evaluation stage, the model card of
the model directory, and the weights file itself. ``gated_image_tag`` names the
image after both the code (git sha) and the model (sha256), so a running pod
says what it serves.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlkit._git import GIT_SHA_RE, git_head
from mlkit._io import sha256_file
from mlkit.deploy.config import SHA256_RE, SHORT_SHA_LEN, parse_image_reference
from mlkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# git_head lives in mlkit._git (model cards use it too); deployment code
# imports it from here.
__all__ = [
    "check_gated_model",
    "gated_image_tag",
    "git_head",
    "image_reference",
]


def check_gated_model(model_dir: str | Path, gate_file: str | Path) -> str:
    """The model's weights sha256, if ``gate_file`` records a pass for exactly
    this model.

    Raises DataError when the gate file is missing, malformed or records a
    failure; when the model directory lacks its card or weights, or holds a
    pickle-like file; when the card's ``weights_sha256`` differs from the gate's
    ``model_sha256`` (a gate for another model; both are named); or when the
    weights file's bytes do not match the card.
    """
    # Imported here: checkpoint imports torch, and mlkit.deploy must stay light
    # for the Pulumi program and the CLI's other commands.
    from mlkit.evaluate.gate import read_gate
    from mlkit.train.checkpoint import WEIGHTS_NAME, read_card

    gate_file, model_dir = Path(gate_file), Path(model_dir)
    gate = read_gate(gate_file)
    card = read_card(model_dir)

    card_sha = card.get("weights_sha256")
    if not isinstance(card_sha, str) or not SHA256_RE.fullmatch(card_sha):
        raise DataError(
            "model card has no valid weights_sha256",
            path=model_dir,
            got=repr(card_sha),
            hint="save the model with mlkit.train.checkpoint.save_checkpoint",
        )
    if gate["model_sha256"] != card_sha:
        raise DataError(
            "the gate file is for another model",
            path=gate_file,
            expected=f"model_sha256 {card_sha} (the card of {model_dir})",
            got=f"model_sha256 {gate['model_sha256']}",
            hint="evaluate this model with the gate, or deploy the model it gated",
        )
    actual = sha256_file(model_dir / WEIGHTS_NAME)
    if actual != card_sha:
        raise DataError(
            "weights do not match the model card",
            path=model_dir / WEIGHTS_NAME,
            expected=f"sha256 {card_sha}",
            got=f"sha256 {actual}",
            hint="the weights were changed after evaluation",
        )
    log.info(
        "model %s passed the gate (macro-F1 %.4f > %.4f)",
        card_sha[:SHORT_SHA_LEN],
        gate["measured"],
        gate["threshold"],
    )
    return card_sha


def gated_image_tag(git_sha: str, model_sha256: str) -> str:
    """``<git sha>-<first 12 hex of the model sha256>``: the image tag that
    names both the code and the model.

    Raises ConfigError for a git sha that is not 7 to 40 hex digits or a model
    sha256 that is not 64.
    """
    git_sha = git_sha.strip().lower()
    if not GIT_SHA_RE.fullmatch(git_sha):
        raise ConfigError(f"not a git commit sha: {git_sha!r}; expected 7-40 hex")
    if not SHA256_RE.fullmatch(model_sha256):
        raise ConfigError(f"not a sha256 hex digest: {model_sha256!r}")
    return f"{git_sha}-{model_sha256[:SHORT_SHA_LEN]}"


def image_reference(repository: str, git_sha: str, model_sha256: str) -> str:
    """``<repository>:<git sha>-<model sha[:12]>``.

    Raises ConfigError when ``repository`` already holds a tag or a digest, or
    for the shas as gated_image_tag does.
    """
    parts = parse_image_reference(repository)
    if parts["tag"] is not None or parts["digest"] is not None:
        raise ConfigError(
            f"{repository!r} already has a tag or digest; give the repository only"
        )
    return f"{parts['repository']}:{gated_image_tag(git_sha, model_sha256)}"
