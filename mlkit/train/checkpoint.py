"""Model checkpoints as safetensors weights plus a JSON model card.

A checkpoint is a directory holding exactly two artifacts:

- ``model.safetensors``: the model's ``state_dict`` (parameters and buffers),
  a format that stores raw tensors and cannot run code when read;
- ``model_card.json``: what the caller said about the model (its configuration,
  labels, metrics) plus the sha256 of the weights, the mlkit version, the git
  commit, the creation time and the name and shape of every tensor.

Loading verifies the weights against the card's sha256, refuses a directory
that also holds pickle-like files (a ``.pt`` next to the weights could be
mistaken for them and runs code when unpickled) and checks every tensor name
and shape against the freshly built model before any value is copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mlkit
from mlkit._git import git_head
from mlkit._io import atomic_path, sha256_file, write_json
from mlkit.errors import DataError

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model_card.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")

# Keys that save_checkpoint fills in; a caller's value for them is replaced.
_RESERVED = ("weights_sha256", "mlkit_version", "git_commit", "created_at", "tensors")


def save_checkpoint(
    directory: str | Path, model: nn.Module, card: Mapping[str, Any]
) -> Path:
    """Write ``model``'s weights and a model card into ``directory``; return it.

    ``card`` must be JSON-serialisable; it should carry whatever the loader's
    ``build_model`` needs to rebuild the architecture. The keys
    ``weights_sha256``, ``mlkit_version``, ``git_commit``, ``created_at`` and
    ``tensors`` are filled in here and override the caller's. Both files are
    written atomically, weights first, so the card on disk never describes
    weights that are not there; an existing checkpoint is replaced.
    """
    directory = Path(directory)
    tensors = state_tensors(model)

    weights = directory / WEIGHTS_NAME
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})

    full_card = dict(card)
    overridden = sorted(key for key in _RESERVED if key in full_card)
    if overridden:
        log.debug("model card keys replaced by save_checkpoint: %s", overridden)
    full_card.update(
        weights_sha256=sha256_file(weights),
        mlkit_version=mlkit.__version__,
        git_commit=_git_commit(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tensors={name: list(t.shape) for name, t in tensors.items()},
    )
    write_json(directory / CARD_NAME, full_card)
    log.info("saved checkpoint %s (%d tensors)", directory, len(tensors))
    return directory


def load_checkpoint(
    directory: str | Path, build_model: Callable[[dict[str, Any]], nn.Module]
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint directory; return ``(model, card)``.

    ``build_model`` receives the model card and returns a freshly initialised
    model of the right architecture; the stored weights are copied into it and
    it is returned in eval mode.

    Raises DataError when the directory or one of its files is missing, when
    the directory holds a pickle-like file (``*.pt``, ``*.pth``, ``*.pkl``,
    ``*.pickle``, ``*.bin``, ``*.ckpt``), when the weights' sha256 differs from
    the card's (naming both), or when a tensor is missing, unexpected or of
    another shape than the model's (naming the first such tensor).
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    card = read_card(directory)

    model = build_model(card)
    tensors = load_weights(weights, expected_sha256=card.get("weights_sha256"))
    check_tensors(model, tensors, source=weights)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    log.info("loaded checkpoint %s", directory)
    return model, card


def read_card(directory: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint directory, after the safety checks.

    Raises DataError for a missing directory, card or weights file, an
    unreadable card, or a pickle-like file in the directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("checkpoint directory not found", path=directory)
    refuse_pickle_files(directory)
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise DataError(
            "model card missing", path=card_path, hint="was it saved by mlkit?"
        )
    if not (directory / WEIGHTS_NAME).is_file():
        raise DataError("weights file missing", path=directory / WEIGHTS_NAME)
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"model card is not valid JSON: {exc}", path=card_path) from exc
    if not isinstance(card, dict):
        raise DataError(
            "model card is not a JSON object", path=card_path, got=type(card).__name__
        )
    return card


def refuse_pickle_files(directory: Path) -> None:
    """Raise DataError if ``directory`` holds a file that could be a pickle."""
    found = sorted(
        p.name
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    if found:
        raise DataError(
            f"refusing to load: pickle-like file(s) {', '.join(found)} in the "
            "checkpoint directory",
            path=directory,
            hint="mlkit checkpoints are safetensors + JSON only; remove these "
            "files or load from a directory without them",
        )


def load_weights(
    path: str | Path, *, expected_sha256: str | None
) -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking its sha256.

    Raises DataError naming the file and both hashes when they differ, or when
    ``expected_sha256`` is missing (an unverifiable file is not loaded).
    """
    path = Path(path)
    if not expected_sha256:
        raise DataError("no weights_sha256 to verify the weights against", path=path)
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DataError(
            "weights do not match the model card",
            path=path,
            expected=f"sha256 {expected_sha256}",
            got=f"sha256 {actual}",
            hint="the file was changed or belongs to another checkpoint",
        )
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"not a readable safetensors file: {exc}", path=path) from exc


def check_tensors(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str | Path
) -> None:
    """Raise DataError at the first tensor whose name or shape differs.

    Tensors are compared in the model's ``state_dict`` order; a tensor the
    file has but the model lacks is reported after all the model's own.
    """
    expected = model.state_dict()
    for name, target in expected.items():
        if name not in tensors:
            raise DataError(
                f"tensor {name!r} of the model is missing from the weights",
                path=source,
            )
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise DataError(
                f"tensor {name!r} has another shape than the model's",
                path=source,
                expected=f"shape {list(target.shape)}",
                got=f"shape {list(tensors[name].shape)}",
            )
    unexpected = [name for name in tensors if name not in expected]
    if unexpected:
        raise DataError(
            f"tensor {unexpected[0]!r} in the weights is not part of the model "
            f"({len(unexpected)} unexpected in all)",
            path=source,
        )


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as independent, contiguous CPU tensors.

    Copies break storage sharing (tied weights, views), which safetensors
    refuses to write.
    """
    return {
        name: t.detach().to("cpu", copy=True).contiguous()
        for name, t in model.state_dict().items()
    }


def _git_commit() -> str | None:
    """The commit of the mlkit checkout that trained the model, if any."""
    return git_head(Path(mlkit.__file__).resolve().parent)
