"""Tests of the predictor: batching never changes an answer, decisions, cache."""

from __future__ import annotations

import dataclasses
import threading
import zlib

import numpy as np
import pytest
import torch

from mlkit.models.transforms import load_image
from mlkit.serve.config import Thresholds
from mlkit.serve.predictor import (
    DEFAULT_BLOCK,
    EmbedJob,
    PredictJob,
    Predictor,
    decide,
    exact_batch_sizes,
    same_length_batches_exact,
)
from mlkit.train.run import load_model

TEXTS = ["itchy red patch", "", "dark irregular mole", "scaly plaque", "   "]


@pytest.fixture(scope="module")
def predictor(tiny_model):
    result, _ = tiny_model
    return Predictor(load_model(result.model_dir), text_cache_size=64)


def predictor_model(predictor):
    """The loaded model behind ``predictor``, to build another predictor on."""
    from mlkit.train.run import LoadedModel

    return LoadedModel(
        model=predictor.model, card=predictor.card, encoder=predictor.encoder
    )


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


def test_block_size_and_max_rows_must_be_positive(tiny_model):
    result, _ = tiny_model
    with pytest.raises(ValueError, match="block_size"):
        Predictor(load_model(result.model_dir), block_size=0)
    with pytest.raises(ValueError, match="max_rows"):
        Predictor(load_model(result.model_dir), max_rows=0)


def test_batch_sizes_are_chosen_when_the_predictor_is_built(predictor):
    # Whichever range the check found on this machine, it is a range that
    # ends at max_rows, or fixed blocks.
    assert (predictor.min_rows, predictor.max_rows) in {
        *((rows, 16) for rows in range(1, 17)),
        (DEFAULT_BLOCK, DEFAULT_BLOCK),
    }
    fixed = Predictor(predictor_model(predictor), block_size=3)
    assert (fixed.min_rows, fixed.max_rows) == (3, 3)


def test_inputs_longer_than_max_rows_are_split(tiny_model, jobs):
    result, _ = tiny_model
    small = Predictor(load_model(result.model_dir), max_rows=3)
    assert small.max_rows == 3
    alone = [small.run_batch([job])[0].value for job in jobs]
    assert [r.value for r in small.run_batch(jobs)] == alone
    images = torch.stack([job.image for job in jobs])
    embeddings = small.vision_embeddings(images)
    assert embeddings.shape == (len(jobs), small.vision_dim)
    torch.testing.assert_close(
        embeddings[4], small.vision_embeddings(images[4:5])[0], rtol=0, atol=0
    )


class Rounding:
    """A fake model whose answers shift with the batch size below ``exact_from``."""

    def __init__(self, exact_from: int | None) -> None:
        self.exact_from = exact_from
        self.calls: list[int] = []

    def __call__(self, rows: int) -> torch.Tensor:
        self.calls.append(rows)
        out = torch.arange(rows, dtype=torch.float32)
        if self.exact_from is None or rows < self.exact_from:
            out = out + rows * 1e-7
        return out


@pytest.mark.parametrize(
    ("exact_from", "max_rows", "expected"),
    [
        (1, 16, 1),  # every size agrees
        (2, 16, 2),  # only a batch of one rounds differently
        (9, 16, 9),
        (None, 16, None),  # every size differs: fixed blocks are needed
        (1, 1, 1),  # one row: nothing to compare
    ],
)
def test_exact_batch_sizes_finds_where_sizes_agree(exact_from, max_rows, expected):
    fake = Rounding(exact_from)
    assert exact_batch_sizes(fake, max_rows) == expected
    # Tried from the largest size down, stopping at the first disagreement.
    assert fake.calls[0] == max_rows
    assert fake.calls == sorted(fake.calls, reverse=True)


def test_a_model_that_rounds_by_batch_size_runs_on_fixed_blocks(tiny_model, jobs):
    result, _ = tiny_model
    loaded = load_model(result.model_dir)
    backbone = loaded.model.backbone
    original = backbone.forward

    def rounding(images: torch.Tensor) -> torch.Tensor:
        # Like a kernel whose rounding depends on the batch size.
        return original(images) + len(images) * 1e-6

    backbone.forward = rounding
    other = Predictor(loaded, max_rows=8)
    assert (other.min_rows, other.max_rows) == (DEFAULT_BLOCK, DEFAULT_BLOCK)
    alone = [other.run_batch([job])[0].value for job in jobs]
    assert [r.value for r in other.run_batch(jobs)] == alone


class LoneRowConv(torch.nn.Conv2d):
    """A convolution that rounds a batch of one differently, as oneDNN may."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 1e-4 if len(x) == 1 else out


def test_only_the_layers_that_round_alone_pad_a_lone_row(tiny_model, jobs):
    result, _ = tiny_model
    loaded = load_model(result.model_dir)
    convs = [
        name
        for name, layer in loaded.model.backbone.named_modules()
        if isinstance(layer, torch.nn.Conv2d)
    ]
    loaded.model.backbone.get_submodule(convs[-1]).__class__ = LoneRowConv

    other = Predictor(loaded, max_rows=8)

    # A lone row is made exact by padding that layer's input (and those of
    # any other layer that takes another path for one row on this machine).
    assert (other.min_rows, other.max_rows) == (1, 8)
    assert convs[-1] in other.padded_layers
    assert set(other.padded_layers) <= set(convs)
    assert other.describe()["padded_layers"] == list(other.padded_layers)
    assert other.describe()["backbone_rows"] == {"min": 1, "max": 8}
    alone = [other.run_batch([job])[0].value for job in jobs]
    assert [r.value for r in other.run_batch(jobs)] == alone
    images = torch.stack([job.image for job in jobs])
    torch.testing.assert_close(
        other.vision_embeddings(images[2:3])[0],
        other.vision_embeddings(images)[2],
        rtol=0,
        atol=0,
    )


def test_a_lone_row_that_rounds_outside_the_layers_pads_the_batch(tiny_model, jobs):
    result, _ = tiny_model
    loaded = load_model(result.model_dir)
    backbone = loaded.model.backbone
    original = backbone.forward

    def rounding(images: torch.Tensor) -> torch.Tensor:
        # Not a layer that padding could fix: the whole pass rounds alone.
        out = original(images)
        return out + 1e-4 if len(images) == 1 else out

    backbone.forward = rounding
    other = Predictor(loaded, max_rows=8)

    assert other.min_rows >= 2 and other.max_rows == 8
    assert other.padded_layers == ()
    # The layers tried and found innocent were put back as they were.
    assert not any(
        type(layer).__name__ == "_AtLeastRows" for layer in other._vision.modules()
    )
    alone = [other.run_batch([job])[0].value for job in jobs]
    assert [r.value for r in other.run_batch(jobs)] == alone


class PaddingEncoder:
    """A text encoder that pads a batch to its longest text, like MiniLM.

    Padding moves the shorter texts' vectors; with ``by_size`` the batch size
    moves every vector as well, so no batch is exact.
    """

    batch_invariant = False

    def __init__(self, dim: int, *, by_size: bool = False, counts: bool = True):
        self.dim = dim
        self.by_size = by_size
        self.counts = counts
        self.calls: list[list[str]] = []

    def token_counts(self, texts):
        return [len(t.split()) for t in texts] if self.counts else None

    def encode(self, texts):
        self.calls.append(list(texts))
        longest = max(len(t.split()) for t in texts)
        rows = []
        for text in texts:
            seed = zlib.crc32(text.encode())
            row = np.random.default_rng(seed).standard_normal(self.dim)
            row += 1e-3 * (longest - len(text.split()))
            if self.by_size:
                row += 1e-6 * len(texts)
            rows.append(row.astype(np.float32))
        return np.stack(rows)


MIXED = [f"{'very ' * (i % 3)}itchy patch {i}" for i in range(20)]


def test_new_texts_of_one_token_count_are_encoded_together(predictor):
    encoder = PaddingEncoder(predictor.text_dim)
    assert same_length_batches_exact(encoder)
    other = Predictor(dataclasses.replace(predictor_model(predictor), encoder=encoder))
    assert other.text_by_length
    alone = np.concatenate([encoder.encode([t]) for t in MIXED])

    encoder.calls.clear()
    vectors, present = other.embed_texts(MIXED)

    np.testing.assert_array_equal(vectors, alone)
    assert present.all()
    # Three token counts: three groups, none mixing lengths or over the
    # eight texts the check tried together.
    assert len(encoder.calls) == 3
    for call in encoder.calls:
        assert len({len(t.split()) for t in call}) == 1 and len(call) <= 8
    assert sorted(t for call in encoder.calls for t in call) == sorted(MIXED)


@pytest.mark.parametrize(
    "encoder_options",
    [{"by_size": True}, {"counts": False}],
    ids=["rounds-by-batch-size", "no-token-counts"],
)
def test_texts_are_encoded_alone_unless_batches_are_exact(predictor, encoder_options):
    encoder = PaddingEncoder(predictor.text_dim, **encoder_options)
    assert not same_length_batches_exact(encoder)
    other = Predictor(dataclasses.replace(predictor_model(predictor), encoder=encoder))
    assert not other.text_by_length
    alone = np.concatenate([encoder.encode([t]) for t in MIXED[:5]])

    encoder.calls.clear()
    vectors, _ = other.embed_texts(MIXED[:5])

    np.testing.assert_array_equal(vectors, alone)
    assert [len(call) for call in encoder.calls] == [1] * 5


def test_answers_from_several_threads_equal_answers_alone(predictor, jobs):
    alone = [predictor.run_batch([job])[0].value for job in jobs]
    answers: dict[int, list] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(3)

    def worker(index: int) -> None:
        try:
            start.wait()
            rotated = jobs[index:] + jobs[:index]
            for _ in range(3):
                answers[index] = [r.value for r in predictor.run_batch(rotated)]
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for index, values in answers.items():
        assert values == alone[index:] + alone[:index]
