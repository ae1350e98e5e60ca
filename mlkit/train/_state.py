"""Resumable training state as safetensors plus JSON, never pickle.

The state directory holds ``training_state.safetensors`` (the model's current
weights under ``model.<name>`` and every optimizer tensor under
``optimizer.<parameter name>.<key>``) and ``training_state.json`` (counters,
scheduler, history, random number generator states encoded as base64 or
lists, and the sha256 of the tensor file). The tensors are written first and
the JSON last, each atomically, so a crash between the two leaves a JSON whose
hash does not match and the state is reported as inconsistent rather than
silently mixed.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from mlkit._io import atomic_path, sha256_file, write_json
from mlkit.errors import DataError
from mlkit.train.checkpoint import load_weights, state_tensors

log = logging.getLogger(__name__)

STATE_DIR = "state"
TENSORS_NAME = "training_state.safetensors"
META_NAME = "training_state.json"
FORMAT_VERSION = 1


def save_state(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: Sequence[Sequence[str]],
    generators: Sequence[torch.Generator],
    meta: dict[str, Any],
) -> None:
    """Write the training state into ``directory`` (replacing an older one).

    ``param_names`` holds, for each optimizer param group, the names of its
    parameters in order; they key the optimizer tensors so that the state can
    be matched to a rebuilt optimizer. ``meta`` is any JSON-able bookkeeping.
    """
    tensors = {f"model.{name}": t for name, t in state_tensors(model).items()}
    opt_state, opt_json = _flatten_optimizer(optimizer, param_names)
    tensors.update(opt_state)

    with atomic_path(directory / TENSORS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "mlkit-training-state"})
    payload = dict(meta)
    payload.update(
        format_version=FORMAT_VERSION,
        optimizer=opt_json,
        rng=capture_rng(generators),
        tensors_sha256=sha256_file(directory / TENSORS_NAME),
    )
    write_json(directory / META_NAME, payload)


def load_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a training state; return ``(meta, tensors)``.

    Raises DataError when the directory or a file is missing, the JSON is
    unreadable, or the tensor file's sha256 differs from the one in the JSON.
    """
    meta_path = directory / META_NAME
    if not meta_path.is_file() or not (directory / TENSORS_NAME).is_file():
        raise DataError(
            "no training state to resume from",
            path=directory,
            hint="run fit without resume=True to start a new run",
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"training state is not valid JSON: {exc}", path=meta_path
        ) from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            "unsupported training state format",
            path=meta_path,
            expected=str(FORMAT_VERSION),
            got=str(meta.get("format_version")),
        )
    tensors = load_weights(
        directory / TENSORS_NAME, expected_sha256=meta.get("tensors_sha256")
    )
    return meta, tensors


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's weights out of a loaded training state."""
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _flatten_optimizer(
    optimizer: torch.optim.Optimizer, param_names: Sequence[Sequence[str]]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split the optimizer's state into named tensors and JSON values."""
    state = optimizer.state_dict()
    index_to_name: dict[int, str] = {}
    groups = []
    for group, names in zip(state["param_groups"], param_names, strict=True):
        index_to_name.update(zip(group["params"], names, strict=True))
        groups.append({"name": group.get("name"), "params": list(names)})

    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        name = index_to_name[index]
        entry: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensor_name = f"optimizer.{name}.{key}"
                tensors[tensor_name] = value.detach().to("cpu", copy=True).contiguous()
                entry[key] = {"tensor": tensor_name}
            else:
                entry[key] = {"value": value}
        per_param[name] = entry
    return tensors, {"groups": groups, "state": per_param}


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    param_names: Sequence[Sequence[str]],
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    source: Path,
) -> None:
    """Load a flattened optimizer state into a freshly built ``optimizer``.

    The rebuilt optimizer must group the same parameters in the same order;
    raises DataError naming the first group that differs.
    """
    saved = meta["optimizer"]
    current = [list(names) for names in param_names]
    stored = [group["params"] for group in saved["groups"]]
    if current != stored:
        i = next(
            (
                k
                for k, (a, b) in enumerate(zip(current, stored, strict=False))
                if a != b
            ),
            min(len(current), len(stored)),
        )
        raise DataError(
            f"optimizer parameter group {i} differs from the saved training state",
            path=source,
            hint="resume with the same model architecture and frozen parameters",
        )

    name_to_index: dict[str, int] = {}
    state_dict = optimizer.state_dict()
    for group, names in zip(state_dict["param_groups"], param_names, strict=True):
        name_to_index.update(zip(names, group["params"], strict=True))
    restored: dict[int, dict[str, Any]] = {}
    for name, entry in saved["state"].items():
        values = {}
        for key, item in entry.items():
            values[key] = tensors[item["tensor"]] if "tensor" in item else item["value"]
        restored[name_to_index[name]] = values
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)


def capture_rng(generators: Iterable[torch.Generator]) -> dict[str, Any]:
    """The states of every random number generator a training step can use."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    captured: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "generators": [_b64(g.get_state()) for g in generators],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_version, list(py_internal), py_gauss],
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        captured["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return captured


def restore_rng(
    state: dict[str, Any], generators: Sequence[torch.Generator], *, source: Path
) -> None:
    """Put every random number generator back into a captured state.

    Raises DataError when the number of data loader generators differs from
    the saved one (the loaders are not built as in the interrupted run).
    """
    if len(state["generators"]) != len(generators):
        raise DataError(
            "the data loaders carry another number of random generators than "
            "in the interrupted run",
            path=source,
            expected=str(len(state["generators"])),
            got=str(len(generators)),
            hint="build the loaders the same way as before resuming",
        )
    torch.set_rng_state(_unb64(state["torch"]))
    for generator, encoded in zip(generators, state["generators"], strict=True):
        generator.set_state(_unb64(encoded))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def loader_generators(loaders: Iterable[DataLoader]) -> list[torch.Generator]:
    """Distinct torch generators that the loaders and their samplers draw from.

    Found on the loader itself (worker seeds), its sampler and the sampler of
    its batch sampler; order is stable for identically built loaders.
    """
    found: list[torch.Generator] = []
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        candidates = (
            getattr(loader, "generator", None),
            getattr(getattr(loader, "sampler", None), "generator", None),
            getattr(getattr(batch_sampler, "sampler", None), "generator", None),
        )
        for generator in candidates:
            if isinstance(generator, torch.Generator) and not any(
                generator is g for g in found
            ):
                found.append(generator)
    return found


def _b64(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
