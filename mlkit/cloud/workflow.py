"""Train and evaluate on Modal from a local checkout: upload, run, download.

The notebooks and the CLI work with local paths. On the ``modal`` backend these
functions put the inputs in the mlkit volume under one run folder, run the
remote function with volume paths, and bring the outputs back to the local
paths, so what follows (notebook 03, deployment) reads local files as usual.

Run folder layout in the volume: ``<run>/prepared`` (manifest and card),
``<run>/data`` (images), ``<run>/train`` (training outputs, ``model/`` inside),
``<run>/evaluate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlkit._io import write_json
from mlkit.cloud.modal_app import (
    fetch_from_volume,
    run_evaluation,
    run_training,
    sync_to_volume,
    volume_relative,
)
from mlkit.data.manifest import CARD_NAME, manifest_file, read_card

log = logging.getLogger(__name__)

Runner = Callable[..., dict]


def train_on_modal(
    config: Mapping[str, Any],
    run: str,
    *,
    upload: bool = True,
    volume: Any = None,
    runner: Runner = run_training,
) -> dict:
    """Train on a Modal GPU with the local training ``config`` (a dict).

    With ``upload`` the manifest folder and the images go to the volume first
    (use ``upload=False`` when ``mlkit cloud sync`` already put them there).
    The trained model directory is downloaded to ``<out_dir>/model`` and the
    returned summary's ``model_dir`` points there.
    """
    manifest_dir = manifest_file(config["manifest"]).parent
    data_root = (
        config.get("data_root")
        or read_card(manifest_dir / CARD_NAME)["parameters"]["data_root"]
    )
    if upload:
        sync_to_volume(manifest_dir, f"{run}/prepared", volume=volume, force=True)
        sync_to_volume(data_root, f"{run}/data", volume=volume, force=True)
    remote = {
        **config,
        "manifest": f"{run}/prepared",
        "data_root": f"{run}/data",
        "out_dir": f"{run}/train",
        "cache_dir": None,
    }
    summary = runner(remote, backend="modal")

    local_model = Path(config["out_dir"]) / "model"
    fetch_from_volume(volume_relative(summary["model_dir"]), local_model, volume=volume)
    log.info("trained on Modal (run %s); model downloaded to %s", run, local_model)
    return {
        **summary,
        "model_dir": str(local_model),
        "remote_model_dir": summary["model_dir"],
    }


def evaluate_on_modal(
    config: Mapping[str, Any],
    run: str,
    *,
    upload: bool = True,
    volume: Any = None,
    runner: Runner = run_evaluation,
) -> dict:
    """Evaluate on Modal; write the report to the local ``out_dir`` too."""
    if upload:
        sync_to_volume(config["model_dir"], f"{run}/model", volume=volume, force=True)
    remote = {
        **config,
        "model_dir": f"{run}/model",
        "manifest": f"{run}/prepared",
        "data_root": f"{run}/data",
        "out_dir": f"{run}/evaluate",
        "cache_dir": None,
    }
    report = runner(remote, backend="modal")
    write_json(Path(config["out_dir"]) / "evaluation_report.json", report)
    return report
