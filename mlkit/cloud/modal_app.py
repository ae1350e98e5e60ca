"""Run training and evaluation on a Modal GPU, next to data kept on a Volume.

Everything Modal-specific here (the app, its image, the volume, the two remote
functions) is only a definition: importing this module contacts nobody and
needs no Modal token. Modal builds the image and looks the volume up when a
run starts, through ``run_training(config, backend="modal")``, ``modal run`` or
``modal deploy``; only then are credentials and the network needed.

Data and outputs live on the volume ``mlkit-data``, mounted at ``/data`` in the
containers. Configs sent to the remote functions give paths relative to the
volume (``datasets/demo/manifest.parquet``) and the functions place them under
``/data``. Upload a local folder first with ``sync_to_volume``, or with the
``modal volume put`` command that ``sync_command_args`` spells out; both put
``remote_dir`` at the same place that a config value ``remote_dir`` points to.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import modal
from pydantic import BaseModel, ValidationError

from mlkit._io import atomic_open
from mlkit.errors import ConfigError, DataError, MlkitError, describe_validation_error

log = logging.getLogger(__name__)

APP_NAME = "mlkit"
VOLUME_NAME = "mlkit-data"
VOLUME_PATH = "/data"
PYTHON_VERSION = "3.11"

# PyPI's Linux wheel of this release is built with CUDA, which the GPU container
# needs; on the project's machines the Makefile installs the CPU build of the
# same release.
DEFAULT_TORCH_SPEC = "torch==2.13.0"
TORCH_SPEC = os.environ.get("MLKIT_MODAL_TORCH", DEFAULT_TORCH_SPEC)

# Read when the module is imported, because Modal fixes a function's GPU when it
# is defined; set MLKIT_MODAL_GPU before `modal run` or `import mlkit.cloud`.
DEFAULT_GPU = "A10G"
GPU = os.environ.get("MLKIT_MODAL_GPU", DEFAULT_GPU)

TRAIN_TIMEOUT_S = 6 * 60 * 60
EVALUATE_TIMEOUT_S = 60 * 60

# Top-level keys of the training and evaluation configs that hold paths.
PATH_KEYS = ("manifest", "data_root", "out_dir", "cache_dir", "model_dir")

Backend = Literal["local", "modal"]

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_dependencies(pyproject: Path) -> list[str]:
    """The runtime requirements (``[project] dependencies``) of a pyproject.toml.

    Raises ConfigError when the file has no such list.
    """
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    dependencies = data.get("project", {}).get("dependencies")
    if not isinstance(dependencies, list):
        raise ConfigError(f"{pyproject}: no [project] dependencies list")
    return [str(requirement) for requirement in dependencies]


def _image_dependencies() -> list[str]:
    # The source checkout's pyproject.toml is the truth. Without it, mlkit was
    # installed from a wheel (use its metadata) or this is a Modal container,
    # where the image is already built and this definition is not used.
    if _PYPROJECT.is_file():
        return project_dependencies(_PYPROJECT)
    try:
        requires = importlib.metadata.requires("mlkit") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [requirement for requirement in requires if "extra ==" not in requirement]


image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    # torch first, in its own layer: it is the largest download and changes least.
    .pip_install(TORCH_SPEC)
    .pip_install(*_image_dependencies())
    # mlkit reads YAML files shipped inside the package (taxonomy, profiles).
    .add_local_python_source(
        "mlkit", ignore=~modal.FilePatternMatcher("**/*.py", "**/*.yaml")
    )
)
data_volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
app = modal.App(APP_NAME)


def volume_paths(
    config: Mapping[str, Any], root: str, *, keys: Sequence[str] = PATH_KEYS
) -> dict[str, Any]:
    """A copy of ``config`` in which the relative paths lie under ``root``.

    Only the top-level ``keys`` are treated as paths. Absolute paths and null
    values are kept, so a config may point elsewhere on purpose. A relative
    path that climbs out of ``root`` (``../x``) is a ConfigError, because it
    would read or write outside the volume. The input is not modified.
    """
    rewritten = copy.deepcopy(dict(config))
    base = PurePosixPath(root)
    for key in keys:
        value = rewritten.get(key)
        if value is None:
            continue
        path = PurePosixPath(os.fspath(value))
        if path.is_absolute():
            rewritten[key] = str(path)
            continue
        if ".." in path.parts:
            raise ConfigError(
                f"{key}: {str(value)!r} leaves the volume; give a path inside it"
            )
        rewritten[key] = str(base / path)
    return rewritten


def _volume_dir(remote_dir: str | PurePosixPath) -> str:
    path = PurePosixPath(os.fspath(remote_dir))
    if ".." in path.parts:
        raise ConfigError(
            f"remote folder {str(remote_dir)!r} leaves the volume; "
            "give a path inside it, such as datasets/demo"
        )
    return str(PurePosixPath("/") / path)


def sync_command_args(
    local_dir: str | Path,
    remote_dir: str,
    *,
    volume_name: str = VOLUME_NAME,
    force: bool = False,
) -> list[str]:
    """The ``modal volume put`` command that does what ``sync_to_volume`` does.

    For a shell or the CLI: it needs the ``modal`` command, credentials and the
    network. Without ``force``, Modal refuses to overwrite files on the volume.
    """
    argv = [
        "modal",
        "volume",
        "put",
        volume_name,
        str(local_dir),
        _volume_dir(remote_dir),
    ]
    if force:
        argv.append("--force")
    return argv


def sync_to_volume(
    local_dir: str | Path,
    remote_dir: str,
    *,
    volume: modal.Volume | None = None,
    force: bool = False,
) -> str:
    """Upload the folder ``local_dir`` to ``remote_dir`` on the volume.

    ``remote_dir`` is relative to the volume's root, so ``datasets/demo``
    appears as ``/data/datasets/demo`` in the containers, where ``volume_paths``
    puts the config value ``datasets/demo``. Returns the folder's path in the
    volume. Raises DataError when ``local_dir`` is not a folder; Modal raises
    FileExistsError for files already there unless ``force``. Needs Modal
    credentials and the network, except with an injected ``volume``.
    """
    local = Path(local_dir)
    if not local.is_dir():
        raise DataError(
            "not a folder to upload",
            path=local,
            hint="give the folder that holds the manifest or the images",
        )
    remote = _volume_dir(remote_dir)
    target = data_volume if volume is None else volume

    started = time.perf_counter()
    with target.batch_upload(force=force) as batch:
        batch.put_directory(str(local), remote)
    log.info(
        "uploaded %s to %s on the volume in %.1f s",
        local,
        remote,
        time.perf_counter() - started,
    )
    return remote


def volume_relative(path: str | PurePosixPath, root: str = VOLUME_PATH) -> str:
    """The in-volume path of a container path under ``root``.

    ``/data/runs/r1/model``, as the remote functions report it, is
    ``runs/r1/model`` in the volume. Raises ConfigError for a path elsewhere.
    """
    given = PurePosixPath(os.fspath(path))
    try:
        return str(given.relative_to(root))
    except ValueError:
        raise ConfigError(
            f"{str(path)!r} is not on the volume; expected a path under {root}"
        ) from None


def fetch_from_volume(
    remote_dir: str,
    local_dir: str | Path,
    *,
    volume: modal.Volume | None = None,
) -> list[Path]:
    """Download the folder ``remote_dir`` of the volume into ``local_dir``.

    ``remote_dir`` is an in-volume path (see ``volume_relative``). Files keep
    their place below ``remote_dir`` and replace local files of the same name;
    each is written atomically. Returns the local files. Raises DataError when
    the folder holds no files. Needs Modal credentials and the network, except
    with an injected ``volume``.
    """
    remote = _volume_dir(remote_dir)
    source = data_volume if volume is None else volume
    local = Path(local_dir)

    started = time.perf_counter()
    written = []
    for entry in source.iterdir(remote, recursive=True):
        if entry.type != modal.volume.FileEntryType.FILE:
            continue
        relative = PurePosixPath(entry.path).relative_to(remote.lstrip("/"))
        target = local.joinpath(*relative.parts)
        with atomic_open(target, "wb") as handle:
            for chunk in source.read_file(entry.path):
                handle.write(chunk)
        written.append(target)
    if not written:
        raise DataError(
            f"no files in {remote} on volume {VOLUME_NAME}",
            hint="check the path with `modal volume ls mlkit-data`",
        )
    log.info(
        "downloaded %s files from %s on the volume to %s in %.1f s",
        len(written),
        remote,
        local,
        time.perf_counter() - started,
    )
    return written


def _validate(model: type[BaseModel], data: Mapping[str, Any], source: str) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid: {describe_validation_error(exc)}"
        ) from exc


def _remote_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    # Left unset, data_root comes from the dataset card, which names the folder
    # on the machine that prepared the manifest: a path the container lacks.
    if config.get("data_root") is None:
        raise ConfigError(
            f"{source}: data_root is required for a Modal run; set it to the "
            "data's folder on the volume (the remote_dir given to sync_to_volume)"
        )
    return volume_paths(config, VOLUME_PATH)


def _train_config(config: Mapping[str, Any], source: str) -> Any:
    from mlkit.train.run import TrainRunConfig

    return _validate(TrainRunConfig, config, source)


def _evaluate_config(config: Mapping[str, Any], source: str) -> Any:
    from mlkit.evaluate.run import EvaluateRunConfig

    return _validate(EvaluateRunConfig, config, source)


def _in_container_setup() -> None:
    # In a container the remote function is the program's entry point, as the
    # CLI is on a workstation, so it sets up logging for Modal's log stream.
    if not modal.is_local():
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )


def _commit_volume() -> None:
    # Modal also commits when the container stops; committing now makes the
    # outputs visible to the next call before this one's container is gone.
    # Outside a container (`.local()`, tests) nothing is mounted: skip it, so
    # that no volume lookup and no credentials are needed.
    if modal.is_local():
        log.info("not in a Modal container: volume %s not committed", VOLUME_NAME)
        return
    data_volume.commit()
    log.info("committed volume %s", VOLUME_NAME)


@app.function(
    gpu=GPU,
    image=image,
    volumes={VOLUME_PATH: data_volume},
    timeout=TRAIN_TIMEOUT_S,
)
def train_remote(config: dict) -> dict:
    """Train in a Modal container; return ``TrainResult.to_dict()``.

    ``config`` is a training config (``mlkit.train.run.TrainRunConfig``) with
    paths relative to the volume; data_root must be set. Raises ConfigError for
    an invalid config, before any training.
    """
    from mlkit.train.run import train_model

    _in_container_setup()
    source = "Modal training config"
    run_config = _train_config(_remote_config(config, source), source)
    log.info("training from %s into %s", run_config.manifest, run_config.out_dir)

    result = train_model(run_config)
    _commit_volume()
    return result.to_dict()


@app.function(
    gpu=GPU,
    image=image,
    volumes={VOLUME_PATH: data_volume},
    timeout=EVALUATE_TIMEOUT_S,
)
def evaluate_remote(config: dict) -> dict:
    """Evaluate in a Modal container; return the evaluation report.

    ``config`` is an evaluation config (``mlkit.evaluate.run.EvaluateRunConfig``)
    with paths relative to the volume; data_root must be set. Raises
    ConfigError for an invalid config, before any evaluation.
    """
    from mlkit.evaluate.run import evaluate_model

    _in_container_setup()
    source = "Modal evaluation config"
    run_config = _evaluate_config(_remote_config(config, source), source)
    log.info("evaluating %s on %s", run_config.model_dir, run_config.manifest)

    report = evaluate_model(run_config)
    _commit_volume()
    return report


def modal_credentials_configured() -> bool:
    """Whether a Modal token is set (environment or ~/.modal.toml); offline."""
    from modal.config import config

    return bool(config.get("token_id") and config.get("token_secret"))


def _check_backend(backend: str) -> None:
    if backend not in ("local", "modal"):
        raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'modal'")


def _require_credentials() -> None:
    if not modal_credentials_configured():
        raise MlkitError(
            "Modal credentials are not configured: run `modal token new`, or set "
            "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, then try again"
        )


def run_training(config: Mapping[str, Any], *, backend: Backend = "local") -> dict:
    """Train here or on Modal; return the training summary as a dict.

    ``"local"`` trains in this process with the paths as given. ``"modal"``
    checks the config here first (a ConfigError costs no GPU time), then runs
    ``train_remote`` in an ephemeral app: the paths are relative to the volume,
    where the data must already be (``sync_to_volume``). The summary's
    ``model_dir`` is then a container path: ``fetch_from_volume(
    volume_relative(model_dir), local_dir)`` downloads the model. Raises
    MlkitError when no Modal token is configured; needs the network.
    """
    _check_backend(backend)
    if backend == "local":
        from mlkit.train.run import train_model

        return train_model(_train_config(config, "training config")).to_dict()

    source = "Modal training config"
    _train_config(_remote_config(config, source), source)
    _require_credentials()
    with app.run():  # pragma: no cover - needs Modal credentials and the network
        return train_remote.remote(dict(config))


def run_evaluation(config: Mapping[str, Any], *, backend: Backend = "local") -> dict:
    """Evaluate here or on Modal; return the evaluation report.

    The backends behave as in ``run_training``.
    """
    _check_backend(backend)
    if backend == "local":
        from mlkit.evaluate.run import evaluate_model

        return evaluate_model(_evaluate_config(config, "evaluation config"))

    source = "Modal evaluation config"
    _evaluate_config(_remote_config(config, source), source)
    _require_credentials()
    with app.run():  # pragma: no cover - needs Modal credentials and the network
        return evaluate_remote.remote(dict(config))
