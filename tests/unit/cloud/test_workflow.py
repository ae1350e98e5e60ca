import json

import modal

from mlkit.cloud import workflow


class Entry:
    def __init__(self, path, kind=modal.volume.FileEntryType.FILE):
        self.path, self.type = path, kind


class Volume:
    """Records uploads and serves downloads like a Modal volume."""

    def __init__(self, files=None):
        self.uploads, self.files = [], files or {}

    def batch_upload(self, force=False):
        volume = self

        class Batch:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def put_directory(self, local, remote):
                volume.uploads.append((local, remote, force))

        return Batch()

    def iterdir(self, path, recursive=True):
        prefix = path.strip("/") + "/"
        return [Entry(name) for name in self.files if name.startswith(prefix)]

    def read_file(self, path):
        yield self.files[path]


def test_train_on_modal_uploads_runs_with_volume_paths_and_downloads(tmp_path):
    prepared, data = tmp_path / "prepared", tmp_path / "images"
    prepared.mkdir()
    data.mkdir()
    (prepared / "dataset_card.json").write_text(
        json.dumps({"parameters": {"data_root": str(data)}})
    )
    volume = Volume({"runs/r1/train/model/model_card.json": b"{}"})
    seen = {}

    def runner(config, *, backend):
        seen.update(config, backend=backend)
        return {"model_dir": "/data/runs/r1/train/model", "best_epoch": 3}

    config = {
        "manifest": str(prepared),
        "out_dir": str(tmp_path / "train"),
        "train": {"epochs": 2},
    }
    summary = workflow.train_on_modal(config, "runs/r1", volume=volume, runner=runner)

    assert volume.uploads == [
        (str(prepared), "/runs/r1/prepared", True),
        (str(data), "/runs/r1/data", True),
    ]
    assert seen["backend"] == "modal"
    assert (seen["manifest"], seen["data_root"], seen["out_dir"]) == (
        "runs/r1/prepared",
        "runs/r1/data",
        "runs/r1/train",
    )
    assert seen["train"] == {"epochs": 2}
    local_model = tmp_path / "train" / "model"
    assert summary["model_dir"] == str(local_model)
    assert summary["remote_model_dir"] == "/data/runs/r1/train/model"
    assert (local_model / "model_card.json").read_bytes() == b"{}"


def test_evaluate_on_modal_uploads_the_model_and_keeps_the_report(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    volume = Volume()

    def runner(config, *, backend):
        assert config["model_dir"] == "runs/r1/model" and backend == "modal"
        return {"metrics": {"macro_f1": 0.7}}

    config = {"model_dir": str(model), "manifest": "m", "out_dir": str(tmp_path / "e")}
    report = workflow.evaluate_on_modal(config, "runs/r1", volume=volume, runner=runner)
    assert volume.uploads == [(str(model), "/runs/r1/model", True)]
    saved = json.loads((tmp_path / "e" / "evaluation_report.json").read_text())
    assert saved == report == {"metrics": {"macro_f1": 0.7}}
    workflow.evaluate_on_modal(
        config, "runs/r1", upload=False, volume=volume, runner=runner
    )
    assert len(volume.uploads) == 1
