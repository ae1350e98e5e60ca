"""Training and evaluation on Modal GPUs, with data on a Modal Volume.

Importing this package defines the Modal app without contacting Modal; see
``mlkit.cloud.modal_app``.
"""

from mlkit.cloud.modal_app import (
    GPU,
    VOLUME_NAME,
    VOLUME_PATH,
    app,
    data_volume,
    evaluate_remote,
    fetch_from_volume,
    image,
    modal_credentials_configured,
    run_evaluation,
    run_training,
    sync_command_args,
    sync_to_volume,
    train_remote,
    volume_paths,
    volume_relative,
)
from mlkit.cloud.workflow import evaluate_on_modal, train_on_modal

__all__ = [
    "GPU",
    "VOLUME_NAME",
    "VOLUME_PATH",
    "app",
    "data_volume",
    "evaluate_remote",
    "fetch_from_volume",
    "image",
    "modal_credentials_configured",
    "run_evaluation",
    "run_training",
    "sync_command_args",
    "sync_to_volume",
    "train_remote",
    "volume_paths",
    "volume_relative",
    "train_on_modal",
    "evaluate_on_modal",
]
