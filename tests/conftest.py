"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from mlkit.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A small synthetic demo dataset with every kind of fault, generated once.

    Tests must not write into it; they get their own output folders.
    """
    root = tmp_path_factory.mktemp("demo") / "data"
    summary = generate(root, SynthConfig(n_samples=300, seed=7))
    return root, summary


TINY_TRAINING = {
    "image_size": 32,
    "text": {"kind": "tfidf", "dim": 8},
    "model": {
        "vision": {"arch": "small_cnn", "width": 8, "depth": 2},
        "fusion": {"proj_dim": 16, "hidden_dim": 16, "aux_heads": True},
    },
    "train": {"epochs": 2, "batch_size": 32, "early_stopping_patience": None},
}


@pytest.fixture(scope="session")
def prepared_demo(demo_data, tmp_path_factory):
    """The demo data prepared into a manifest, once per session."""
    from mlkit.data.prepare import PrepareConfig, prepare

    root, _ = demo_data
    out = tmp_path_factory.mktemp("prepared_demo")
    prepare(PrepareConfig(data_root=root, out_dir=out, image_check="full"))
    return out


@pytest.fixture(scope="session")
def tiny_model(prepared_demo, tmp_path_factory):
    """A tiny model trained for two epochs on the prepared demo data."""
    from mlkit.train.run import parse_train_run_config, train_model

    out = tmp_path_factory.mktemp("tiny_model")
    config = parse_train_run_config(
        {**TINY_TRAINING, "manifest": prepared_demo, "out_dir": out}
    )
    return train_model(config), config


@pytest.fixture(scope="session")
def gated_model(tiny_model, prepared_demo, tmp_path_factory):
    """The tiny model evaluated on the demo test split, with a passing gate.json.

    The threshold is 0: this is about the deployment path, not model quality.
    """
    from mlkit.evaluate.gate import write_gate
    from mlkit.evaluate.run import EvaluateRunConfig, evaluate_model

    result, _ = tiny_model
    out = tmp_path_factory.mktemp("gated")
    report = evaluate_model(
        EvaluateRunConfig(
            model_dir=result.model_dir,
            manifest=prepared_demo,
            out_dir=out,
            ablations=False,
        )
    )
    return result.model_dir, write_gate(out / "gate.json", report, 0.0)


def tiny_profile() -> dict:
    """A pipeline profile that runs all five notebooks in a couple of minutes."""
    tiny = {k: v for k, v in TINY_TRAINING.items() if k != "train"}
    return {
        "name": "tiny",
        "data": {"synthetic": {"n_samples": 150, "seed": 2}},
        "stages": {
            "01_preprocess": {"min_samples_per_label": 2},
            "02_train": {"config": "ci", "overrides": tiny, "epochs": 2},
            "03_evaluate": {"min_macro_f1": 0.9},
            "04_deploy": {"smoke_images": 3, "git_sha": "abc1234"},
            "05_scaling_demo": {
                "levels": [1, 4],
                "seconds_per_level": 1.5,
                "payload_images": 6,
                "quiet_s": 30.0,
                "ramp_s": 30.0,
                "hold_s": 60.0,
            },
        },
    }


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The whole pipeline run once on the tiny profile: (root, summary).

    ``root`` holds ``build/`` (the work directory) and ``executed/`` (the
    executed notebooks). The gate threshold is overridden to 0, as CI may.
    """
    import yaml

    from mlkit.pipeline.runner import run_pipeline

    root = tmp_path_factory.mktemp("tiny_pipeline")
    profile = root / "tiny.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile()))
    summary = run_pipeline(
        profile,
        workdir=root / "build",
        executed_dir=root / "executed",
        min_macro_f1=0.0,
    )
    return root, summary


# `make test` runs the suite in two pytest-xdist workers. Each test file goes to
# one worker as a whole (its module fixtures are built once), and the files that
# share the tiny pipeline go to the same worker, so the pipeline runs once.
_PIPELINE_FILES = {"test_pipeline.py", "test_site.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class _ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            shared = path.rsplit("/", 1)[-1] in _PIPELINE_FILES
            return "tiny_pipeline" if shared else path

    return _ByFile(config, log)
