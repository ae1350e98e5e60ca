"""Tests of the predictor: batching never changes an answer, decisions, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlkit.models.transforms import load_image
from mlkit.serve.config import Thresholds
from mlkit.serve.predictor import EmbedJob, PredictJob, Predictor, decide
from mlkit.train.run import load_model

TEXTS = ["itchy red patch", "", "dark irregular mole", "scaly plaque", "   "]


@pytest.fixture(scope="module")
def predictor(tiny_model):
    result, _ = tiny_model
    return Predictor(load_model(result.model_dir), text_cache_size=64)


@pytest.fixture(scope="module")
def jobs(predictor, demo_data):
    root, _ = demo_data
    paths = sorted(root.rglob("*.jpg"))[:11]
    jobs = []
    for i, path in enumerate(paths):
        image = predictor.prepare_image(load_image(path))
        jobs.append(PredictJob(image, None, TEXTS[i % len(TEXTS)], 3, Thresholds()))
    return jobs


def test_batched_answers_equal_answers_alone(predictor, jobs):
    alone = [predictor.run_batch([job])[0].value for job in jobs]
    together = predictor.run_batch(jobs)
    assert [r.value for r in together] == alone
    # Every batch size, and the jobs in another order, give the same answers.
    for size in (2, 3, 5, 7):
        for start in range(0, len(jobs), size):
            chunk = predictor.run_batch(jobs[start : start + size])
            assert [r.value for r in chunk] == alone[start : start + size]
    reversed_answers = [r.value for r in predictor.run_batch(jobs[::-1])]
    assert reversed_answers == alone[::-1]
    assert {r.batch.size for r in together} == {len(jobs)}


def test_vision_embedding_gives_the_image_answer(predictor, jobs):
    features = predictor.vision_embeddings(torch.stack([jobs[0].image]))[0]
    from_embedding = PredictJob(None, features, jobs[0].text, 3, Thresholds())
    mixed = predictor.run_batch([jobs[1], from_embedding, jobs[2]])
    assert mixed[1].value == predictor.run_batch([jobs[0]])[0].value
    assert predictor.vision_dim == features.shape[0]


def test_embed_jobs_share_a_batch_with_predictions(predictor, jobs):
    results = predictor.run_batch([jobs[0], EmbedJob(("scaly plaque", " ")), jobs[1]])
    vectors = np.array(results[1].value["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, predictor.text_dim)
    expected, has_text = predictor.embed_texts(["scaly plaque", " "])
    np.testing.assert_array_equal(vectors, expected)
    assert has_text.tolist() == [True, False]
    assert not vectors[1].any()


def test_text_cache_is_bounded_and_per_text_when_not_batch_invariant(predictor):
    calls = []
    original = predictor.encoder

    class OneAtATime:
        batch_invariant = False
        dim = original.dim

        def encode(self, texts):
            calls.append(list(texts))
            return original.encode(texts)

    predictor.encoder = OneAtATime()
    try:
        texts = [f"lesion number {i}" for i in range(70)]
        vectors, _ = predictor.embed_texts(texts + texts[:2])
    finally:
        predictor.encoder = original
    assert all(len(call) == 1 for call in calls)
    assert len(calls) == 70  # the repeats came from the cache
    np.testing.assert_array_equal(vectors[:70], original.encode(texts))
    assert len(predictor._text_cache) == 64


def test_decide_reports_each_failed_test():
    classes = ["a", "b", "c", "d"]
    sure = decide(np.array([0.9, 0.05, 0.03, 0.02]), classes, 2, Thresholds())
    assert sure["prediction"] == "a"
    assert not sure["uncertain"] and sure["reasons"] == []
    assert [t["label"] for t in sure["top_k"]] == ["a", "b"]
    assert sure["margin"] == pytest.approx(0.85)

    close = decide(np.array([0.48, 0.46, 0.04, 0.02]), classes, 4, Thresholds())
    assert close["prediction"] == "uncertain"
    assert close["top_class"] == "a"
    assert [r["test"] for r in close["reasons"]] == ["confidence", "margin"]
    assert close["reasons"][0]["detail"] == "confidence 0.480 < 0.500"

    flat = decide(np.full(4, 0.25), classes, 1, Thresholds(min_margin=0.0))
    assert flat["normalized_entropy"] == pytest.approx(1.0)
    assert [r["test"] for r in flat["reasons"]] == ["confidence", "entropy"]

    permissive = Thresholds(min_confidence=0, min_margin=0, max_entropy=1)
    assert decide(np.full(4, 0.25), classes, 1, permissive)["prediction"] == "a"


def test_warm_up_leaves_no_trace(predictor):
    before = dict(predictor._text_cache)
    assert predictor.warm_up(rounds=1) > 0
    assert dict(predictor._text_cache).keys() == before.keys()
    description = predictor.describe()
    assert description["version"] == predictor.version
    assert description["classes"] == len(predictor.classes)


@pytest.mark.parametrize("block", [1, 3])
def test_any_block_size_keeps_answers_independent_of_batching(tiny_model, jobs, block):
    result, _ = tiny_model
    other = Predictor(load_model(result.model_dir), block_size=block)
    alone = [other.run_batch([job])[0].value for job in jobs]
    assert [r.value for r in other.run_batch(jobs)] == alone
    assert [r.value for r in other.run_batch(jobs[3:8])] == alone[3:8]


def test_block_size_must_be_positive(tiny_model):
    result, _ = tiny_model
    with pytest.raises(ValueError, match="block_size"):
        Predictor(load_model(result.model_dir), block_size=0)
