"""Benchmark: training in the `ci` profile on the synthetic demo data.

Goals (issue: model, training, evaluation): training finishes in at most 3
minutes on 2 cores and reaches a test macro-F1 of at least 0.9 (synthetic
data); waiting for data is under 10% of the training step time. It also
reports training throughput (images per second).

The demo data is generated and prepared exactly as the `ci` profile does; the
model is trained with the packaged `ci` training config and evaluated on the
test split. Data wait comes from the trainer's history: the time each epoch
spent waiting for the loader's next batch, against the epoch's training time.

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from mlkit.data.prepare import PrepareConfig, prepare
from mlkit.data.synthetic import SynthConfig, generate
from mlkit.evaluate.run import EvaluateRunConfig, evaluate_model
from mlkit.pipeline.runner import load_profile
from mlkit.train.run import TrainRunConfig, train_model

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SECONDS, GOAL_MACRO_F1, GOAL_DATA_SHARE = 180.0, 0.9, 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ci", help="training config name or YAML")
    args = parser.parse_args()
    profile = load_profile("ci")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth = profile.data.synthetic
        generate(tmp / "data", SynthConfig(n_samples=synth.n_samples, seed=synth.seed))
        prepare_params = profile.stages["01_preprocess"]
        prepare(
            PrepareConfig(
                data_root=tmp / "data", out_dir=tmp / "prepared", **prepare_params
            )
        )

        config = TrainRunConfig.from_yaml(
            args.config, manifest=tmp / "prepared", out_dir=tmp / "train"
        )
        started = time.perf_counter()
        result = train_model(config)
        train_seconds = time.perf_counter() - started

        report = evaluate_model(
            EvaluateRunConfig(
                model_dir=result.model_dir,
                manifest=tmp / "prepared",
                out_dir=tmp / "evaluate",
                ablations=False,
            )
        )
        history = pd.read_csv(tmp / "train" / "history.csv")

    images = int(history["train_samples"].sum())
    step_seconds = float(history["train_seconds"].sum())
    data_seconds = float(history["data_seconds"].sum())
    result_json = {
        "config": args.config,
        "train_rows": int(history["train_samples"].iloc[0]),
        "epochs_run": len(history),
        "training_wall_seconds": round(train_seconds, 1),
        "test_macro_f1": round(report["metrics"]["macro_f1"], 4),
        "test_accuracy": round(report["metrics"]["accuracy"], 4),
        "synthetic": report["synthetic"],
        "throughput_images_per_second": round(images / step_seconds, 1),
        "data_wait_share_of_step_time": round(data_seconds / step_seconds, 4),
        "cpu_count": os.cpu_count(),
        "goals": {
            "training_wall_seconds": GOAL_SECONDS,
            "test_macro_f1": GOAL_MACRO_F1,
            "data_wait_share": GOAL_DATA_SHARE,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(result_json, indent=2) + "\n")

    share = result_json["data_wait_share_of_step_time"]
    print(
        f"training:   {train_seconds:7.1f} s for {len(history)} epochs "
        f"(goal <= {GOAL_SECONDS:.0f} s)"
    )
    print(
        f"test macro-F1 (synthetic data): {result_json['test_macro_f1']:.4f} "
        f"(goal >= {GOAL_MACRO_F1})"
    )
    print(f"throughput: {result_json['throughput_images_per_second']:7.1f} images/s")
    print(
        f"data wait:  {share:7.1%} of training step time (goal < {GOAL_DATA_SHARE:.0%})"
    )
    met = (
        train_seconds <= GOAL_SECONDS
        and result_json["test_macro_f1"] >= GOAL_MACRO_F1
        and share < GOAL_DATA_SHARE
    )
    print("all goals met" if met else "GOALS NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
