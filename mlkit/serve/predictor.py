"""The model behind the service: batches of requests in, answers out.

``Predictor.run_batch`` is what the micro-batcher calls in its worker threads.
A batch may mix predictions from images, predictions from client-side vision
embeddings and text-embedding requests; each item's answer is exactly what it
would be alone (see ``_in_blocks`` and ``exact_batch_sizes``), so batching
changes speed, never results.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mlkit.errors import MlkitError
from mlkit.models.backbones import Backbone, fold_batch_norm
from mlkit.serve.config import Thresholds
from mlkit.text.base import TextEncoder
from mlkit.train.run import LoadedModel

log = logging.getLogger(__name__)

# The fixed block size when the model's answers depend on the batch size at
# every size (see Predictor and _in_blocks).
DEFAULT_BLOCK = 4
# The most rows one model call takes when no batch size is given.
DEFAULT_MAX_ROWS = 16
# Texts of one token count tried together and alone when the predictor is
# built (see same_length_batches_exact); also the most texts encoded at once.
_PROBE_TEXTS = tuple(
    f"a {word} patch of skin on the left arm"
    for word in ("red", "dark", "pale", "raised", "flat", "dry", "small", "large")
)


@dataclass(frozen=True)
class PredictJob:
    """One prediction: an image tensor or a vision embedding, and a text."""

    image: torch.Tensor | None
    vision_embedding: torch.Tensor | None
    text: str
    top_k: int
    thresholds: Thresholds


@dataclass(frozen=True)
class EmbedJob:
    """Text embeddings for the texts of one request."""

    texts: tuple[str, ...]


@dataclass(frozen=True)
class BatchInfo:
    """When the batch an item ran in started, how long it took, its size."""

    started: float
    seconds: float
    size: int


@dataclass(frozen=True)
class JobResult:
    value: dict[str, Any]
    batch: BatchInfo


class Predictor:
    """A loaded model with the serving transform, text encoder and text cache.

    Each call of the vision backbone takes between ``min_rows`` and
    ``max_rows`` rows (a smaller batch is zero-padded, a larger one split),
    chosen so that a row's answer never depends on the batch it ran in. With
    ``block_size`` given, every model call takes exactly that many rows, which
    is exact by construction. Without it, the backbone is tried on random
    inputs at every batch size up to ``max_rows`` when the predictor is built
    (:func:`exact_batch_sizes`): from the smallest size on which every larger
    one agrees bit for bit, whole batches run unsplit. Smaller batches are
    padded only inside the layers that round differently for them, when that
    makes every size agree (``padded_layers``, see ``_pad_small_batches``),
    and as a whole otherwise. When no range of sizes agrees, blocks of
    ``DEFAULT_BLOCK`` rows are used. The classifier head is
    cheap next to the backbone and always runs on fixed blocks of
    ``max_rows``.

    Safe to call from several threads at once (the batcher's workers): the
    model only reads its weights in eval mode, and the text encoder and its
    cache are used under a lock. ``prepare_image`` only reads the transform.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        text_cache_size: int = 4096,
        block_size: int | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be at least 1 or None, got {block_size}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.model = loaded.model.eval()
        self.card = loaded.card
        self.encoder = loaded.encoder
        self.classes = loaded.classes
        self.version: str = loaded.card["weights_sha256"]
        self._transform = loaded.transform()
        self.uses_image = "image" in self.model.modalities
        self.uses_text = "text" in self.model.modalities
        backbone = getattr(self.model, "backbone", None)
        self.vision_dim: int | None = backbone.out_dim if backbone is not None else None
        self._vision = None if backbone is None else _for_inference(backbone)
        self._text_cache: collections.OrderedDict[str, np.ndarray] = (
            collections.OrderedDict()
        )
        self._text_cache_size = text_cache_size
        # Whether new texts of one token count may be encoded together.
        self.text_by_length = not self.encoder.batch_invariant and (
            same_length_batches_exact(self.encoder)
        )
        if self.text_by_length:
            log.info("new texts of one token count are encoded together (exact)")
        # Guards the cache and the encoder (a fast tokenizer may not be
        # called from two threads at once). Limitation: texts the cache has
        # not seen are then encoded by one worker at a time, which bounds
        # throughput when every request brings a new text.
        self._text_lock = threading.Lock()
        # Layers of the served backbone that pad small batches themselves.
        self.padded_layers: tuple[str, ...] = ()
        self.head_rows = block_size or max_rows
        if block_size is not None:
            self.min_rows = self.max_rows = block_size
        elif backbone is None:
            self.min_rows = self.max_rows = max_rows
        else:
            self.min_rows, self.max_rows = self._choose_rows(max_rows)

    def _choose_rows(self, max_rows: int) -> tuple[int, int]:
        """(min_rows, max_rows) that keep the backbone exact on this machine."""
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(0)
        size = self.card["image"]["size"]
        images = torch.randn(max_rows, 3, size, size, generator=generator)

        def backbone(rows: int) -> torch.Tensor:
            with torch.inference_mode():
                return self._vision_forward(images[:rows])

        smallest = exact_batch_sizes(backbone, max_rows)
        if smallest is None:
            rows = min(DEFAULT_BLOCK, max_rows)
            log.info(
                "the backbone's answers depend on the batch size: running it on "
                "fixed blocks of %s rows",
                rows,
            )
            return rows, rows
        exact_from = smallest
        if smallest > 1 and self._pad_small_batches(backbone, images, smallest):
            smallest = 1
        how = "run whole" if smallest == 1 else f"are padded to at least {smallest}"
        if self.padded_layers:
            how += (
                f"; below {exact_from} rows, only "
                f"{', '.join(self.padded_layers)} pad their input"
            )
        log.info(
            "backbone batch sizes %s to %s give identical answers (checked in "
            "%.2f s): batches %s",
            smallest,
            max_rows,
            time.perf_counter() - started,
            how,
        )
        return smallest, max_rows

    def _pad_small_batches(
        self,
        backbone: Callable[[int], torch.Tensor],
        images: torch.Tensor,
        smallest: int,
    ) -> bool:
        """Pad only the layers that round differently below ``smallest`` rows.

        Padding a small batch to ``smallest`` rows costs a whole backbone pass
        per padded row. Usually only a few layers change their kernel for
        small batches (for the ``full`` ResNet on oneDNN: the three
        convolutions of the last stage, at a batch of one), so those layers
        get wrapped in :class:`_AtLeastRows` instead. Kept only when every
        batch size from 1 then agrees bit for bit with the largest; otherwise
        the wrappers are removed again and False is returned.
        """
        assert self._vision is not None
        wrapped = _wrap_small_batch_layers(
            self._vision, lambda: backbone(smallest), smallest
        )
        reference = backbone(len(images))
        if wrapped and all(
            torch.equal(backbone(rows), reference[:rows]) for rows in range(1, smallest)
        ):
            self.padded_layers = tuple(wrapped)
            return True
        for name in wrapped:
            layer = self._vision.get_submodule(name)
            self._vision.set_submodule(name, layer.module)
        return False

    def _head(
        self,
        features: torch.Tensor | None,
        text: torch.Tensor | None,
        has_text: torch.Tensor | None,
    ) -> torch.Tensor:
        outputs = self.model(text=text, has_text=has_text, image_features=features)
        return torch.softmax(outputs["logits"].float(), dim=1)

    @property
    def text_dim(self) -> int:
        return self.encoder.dim

    def prepare_image(self, image: Image.Image) -> torch.Tensor:
        """The model input for ``image``: crop, resize, normalize."""
        return self._transform(image)

    def describe(self) -> dict[str, Any]:
        """What a client needs to call the model: classes, sizes, version."""
        return {
            "version": self.version,
            "classes": len(self.classes),
            "modalities": list(self.model.modalities),
            "image_size": self.card["image"]["size"],
            "vision_embedding_dim": self.vision_dim,
            "text_encoder": self.card["text_encoder"]["id"],
            "text_embedding_dim": self.text_dim,
            "backbone_rows": {"min": self.min_rows, "max": self.max_rows},
            "padded_layers": list(self.padded_layers),
        }

    def run_batch(self, jobs: list[PredictJob | EmbedJob]) -> list[JobResult]:
        """Answer every job of a batch, in order (the batcher's predict_batch)."""
        started = time.perf_counter()
        results: list[dict[str, Any] | None] = [None] * len(jobs)

        predict_at = [i for i, j in enumerate(jobs) if isinstance(j, PredictJob)]
        if predict_at:
            predict_jobs = [jobs[i] for i in predict_at]
            probs = self.probabilities(predict_jobs)  # type: ignore[arg-type]
            for i, job, row in zip(predict_at, predict_jobs, probs, strict=True):
                results[i] = decide(row, self.classes, job.top_k, job.thresholds)
        for i, job in enumerate(jobs):
            if isinstance(job, EmbedJob):
                vectors, _ = self.embed_texts(list(job.texts))
                results[i] = {"embeddings": vectors.tolist()}

        info = BatchInfo(started, time.perf_counter() - started, len(jobs))
        return [JobResult(r, info) for r in results if r is not None]

    def probabilities(self, jobs: list[PredictJob]) -> np.ndarray:
        """Class probabilities (len(jobs), n_classes) as float32."""
        text = has_text = None
        if self.uses_text:
            vectors, present = self.embed_texts([job.text for job in jobs])
            text, has_text = torch.from_numpy(vectors), torch.from_numpy(present)
        with torch.inference_mode():
            features = self._vision_features(jobs) if self.uses_image else None
            rows = self.head_rows
            probs = _in_blocks(rows, rows, self._head, features, text, has_text)
        return probs.numpy()

    def _backbone(self, images: torch.Tensor) -> torch.Tensor:
        """Vision features of prepared images, in exact batch sizes."""
        return _in_blocks(self.min_rows, self.max_rows, self._vision_forward, images)

    def _vision_forward(self, images: torch.Tensor) -> torch.Tensor:
        assert self._vision is not None
        return self._vision(images.contiguous(memory_format=torch.channels_last))

    def vision_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """What ``/v1/predict/embeddings`` expects for prepared ``images``.

        Computed as the server computes them, so the answer for an embedding
        equals the answer for its image.
        """
        if self.vision_dim is None:
            raise MlkitError("this model uses no image, so it has no vision encoder")
        with torch.inference_mode():
            return self._backbone(images)

    def _vision_features(self, jobs: list[PredictJob]) -> torch.Tensor:
        """Backbone features: computed for images, taken as given for embeddings."""
        assert self.vision_dim is not None
        features = torch.empty(len(jobs), self.vision_dim)
        image_at = [i for i, job in enumerate(jobs) if job.image is not None]
        if image_at:
            images = torch.stack([jobs[i].image for i in image_at])  # type: ignore[misc]
            features[image_at] = self._backbone(images)
        for i, job in enumerate(jobs):
            if job.image is None:
                assert job.vision_embedding is not None
                features[i] = job.vision_embedding
        return features

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors float32 (n, dim), has_text bool (n,)); blank text is zeros.

        Vectors come from an LRU cache when the text was seen recently.
        """
        with self._text_lock:
            return self._embed_texts(texts)

    def _embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        has_text = np.array([t.strip() != "" for t in texts], dtype=bool)
        vectors = np.zeros((len(texts), self.text_dim), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        missing = []
        for text, present in zip(texts, has_text, strict=True):
            if not present or text in found:
                continue
            cached = self._text_cache.get(text)
            if cached is None:
                missing.append(text)
                found[text] = cached  # type: ignore[assignment]
            else:
                self._text_cache.move_to_end(text)
                found[text] = cached
        if missing:
            if self.encoder.batch_invariant:
                encoded = self.encoder.encode(missing)
            elif self.text_by_length:
                # This encoder pads a batch to its longest text, which moves
                # the last bits of the other vectors; texts of one token count
                # need no padding and were checked to batch exactly.
                encoded = self._encode_by_length(missing)
            else:
                # Limitation: to keep every answer identical to the same
                # request sent alone, new texts are encoded one at a time. The
                # cache makes repeats free.
                encoded = np.concatenate([self.encoder.encode([t]) for t in missing])
            for text, vector in zip(missing, encoded, strict=True):
                found[text] = vector.astype(np.float32, copy=False)
                self._remember(text, found[text])
        for i, (text, present) in enumerate(zip(texts, has_text, strict=True)):
            if present:
                vectors[i] = found[text]
        return vectors, has_text

    def _encode_by_length(self, texts: list[str]) -> np.ndarray:
        """Encode ``texts`` in groups of one token count, as checked exact.

        No group is padded, and each call takes at most as many texts as the
        check tried, so every vector equals the text's vector alone.
        """
        counts = self.encoder.token_counts(texts)
        assert counts is not None
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for i, count in enumerate(counts):
            groups[count].append(i)
        out = np.empty((len(texts), self.text_dim), dtype=np.float32)
        for members in groups.values():
            for start in range(0, len(members), len(_PROBE_TEXTS)):
                chunk = members[start : start + len(_PROBE_TEXTS)]
                out[chunk] = self.encoder.encode([texts[i] for i in chunk])
        return out

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self._text_cache[text] = vector
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)

    def warm_up(self, rounds: int = 2) -> float:
        """Run a few dummy batches so the first real request is not slow.

        Returns the seconds it took. The answers are discarded.
        """
        started = time.perf_counter()
        size = self.card["image"]["size"]
        image = Image.new("RGB", (size, size), (128, 96, 80))
        tensor = self.prepare_image(image)
        # The encoder is warmed directly: a warm-up text must not take a place
        # in the cache.
        job = PredictJob(tensor, None, "", 1, Thresholds())
        for _ in range(rounds):
            with self._text_lock:
                self.encoder.encode(["warm-up text"])
            self.probabilities([job])
            self.probabilities([job] * self.max_rows)
        return time.perf_counter() - started


def _for_inference(backbone: torch.nn.Module) -> torch.nn.Module:
    """The backbone as the server runs it: batch norms folded, channels last.

    Both only change how the same function is computed: measured with the
    serving benchmark's ``--batch-costs``, the ``full`` config's backbone on
    one torch thread (a model worker's) took about a fifth less time per image
    at batch sizes 2 to 16. The answers differ from
    the training code's in the last bits only; the server's own answers stay
    independent of batching (see ``_in_blocks``).
    """
    if isinstance(backbone, Backbone):
        return fold_batch_norm(backbone).to(memory_format=torch.channels_last)
    return backbone


def same_length_batches_exact(encoder: TextEncoder) -> bool:
    """Whether ``encoder`` gives texts of one token count the same bits together.

    Padding a batch to its longest text moves the last bits of the shorter
    texts' vectors (so a padding encoder is not ``batch_invariant``), but a
    batch of texts of one length needs no padding. Tried on texts of one
    length, alone and in every batch size up to their number, bit for bit.
    False when the encoder cannot count tokens or any size disagrees.
    """
    counts = encoder.token_counts(_PROBE_TEXTS)
    if counts is None or len(set(counts)) != 1:
        return False
    alone = np.concatenate([encoder.encode([text]) for text in _PROBE_TEXTS])
    return all(
        np.array_equal(encoder.encode(_PROBE_TEXTS[:n]), alone[:n])
        for n in range(2, len(_PROBE_TEXTS) + 1)
    )


def exact_batch_sizes(
    model: Callable[[int], torch.Tensor], max_rows: int
) -> int | None:
    """The smallest batch size from which every size up to ``max_rows`` agrees.

    ``model(rows)`` must return the answers for the first ``rows`` of fixed
    inputs. Sizes are tried from ``max_rows`` down until one disagrees bit for
    bit with the answers at ``max_rows``; returns None when already
    ``max_rows - 1`` disagrees (so no range of sizes can be trusted).
    """
    # Limitation: the check runs on one set of inputs. CPU kernels choose
    # their code path by shapes and thread count, not by values, so inputs of
    # the served shape stand for all; the server's tests compare real answers.
    reference = model(max_rows)
    smallest = max_rows
    for rows in range(max_rows - 1, 0, -1):
        if not torch.equal(model(rows), reference[:rows]):
            break
        smallest = rows
    if smallest == max_rows and max_rows > 1:
        return None
    return smallest


def _in_blocks(
    min_rows: int,
    max_rows: int,
    fn: Callable[..., torch.Tensor],
    *tensors: torch.Tensor | None,
) -> torch.Tensor:
    """``fn`` on chunks of at most ``max_rows`` rows, each zero-padded to ``min_rows``.

    CPU kernels (oneDNN convolutions, matrix products) choose their code path
    by the batch size, and different paths may round differently in the last
    bits. Calling the model only with batch sizes that agree with each other
    (a fixed block, ``min_rows == max_rows``, or a range checked by
    :func:`exact_batch_sizes`) makes each row's result independent of how many
    requests shared its batch and where it sat in it. Rows are computed
    independently in eval mode, so padding cannot change real rows. ``None``
    arguments are passed through as None.
    """
    # Limitation: this holds for the CPU kernels, and the tests check it on the
    # build machine; on a GPU, batched answers may differ in the last bits.
    n = len(next(t for t in tensors if t is not None))
    blocks = []
    for start in range(0, n, max_rows):
        size = min(max_rows, n - start)
        rows = max(size, min_rows)
        padded = [
            None if t is None else _pad(t[start : start + size], rows) for t in tensors
        ]
        blocks.append(fn(*padded)[:size])
    return torch.cat(blocks)


_BATCHED_LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


class _AtLeastRows(torch.nn.Module):
    """``module`` on at least ``rows`` rows: a smaller batch is zero-padded, then cut.

    Rows are independent in eval mode, so the padding changes no real row;
    it only makes the kernels take the code path they take for ``rows``.
    """

    def __init__(self, module: torch.nn.Module, rows: int) -> None:
        super().__init__()
        self.module = module
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n >= self.rows:
            return self.module(x)
        padded = _pad(x, self.rows)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            padded = padded.contiguous(memory_format=torch.channels_last)
        return self.module(padded)[:n]

    def extra_repr(self) -> str:
        return f"rows={self.rows}"


def _wrap_small_batch_layers(
    model: torch.nn.Module, run: Callable[[], torch.Tensor], rows: int
) -> list[str]:
    """Wrap each layer whose answer for fewer than ``rows`` rows differs.

    ``run()`` must call ``model`` on a batch of ``rows`` rows; each
    convolution and linear layer's input and output in that call are
    recorded, and the layer is tried on the first 1 .. rows-1 of those inputs.
    A layer that disagrees with its own output in any last bit is replaced by
    ``_AtLeastRows(layer, rows)``. Returns the names of the wrapped layers.
    """
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = {
        name: layer
        for name, layer in model.named_modules()
        if isinstance(layer, _BATCHED_LAYERS)
    }

    def recorder(name: str) -> Callable[..., None]:
        def record(_: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
            # Copies: later in-place ops (a ReLU, a residual sum) may change them.
            seen[name] = (args[0].clone(), out.clone())

        return record

    hooks = [layer.register_forward_hook(recorder(n)) for n, layer in layers.items()]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    wrapped = []
    with torch.inference_mode():
        for name, (inputs, outputs) in seen.items():
            layer = layers[name]
            if any(
                not torch.equal(layer(inputs[:n]), outputs[:n]) for n in range(1, rows)
            ):
                model.set_submodule(name, _AtLeastRows(layer, rows))
                wrapped.append(name)
    return wrapped


def _pad(tensor: torch.Tensor, block: int) -> torch.Tensor:
    extra = block - len(tensor)
    if not extra:
        return tensor
    pad = torch.zeros((extra, *tensor.shape[1:]), dtype=tensor.dtype)
    return torch.cat([tensor, pad])


def decide(
    probs: np.ndarray, classes: list[str], top_k: int, thresholds: Thresholds
) -> dict[str, Any]:
    """The answer for one probability vector: top-k, prediction, uncertainty.

    The prediction is the most probable class, or ``"uncertain"`` when one of
    the threshold tests fails; ``reasons`` lists each failed test with the
    measured value and the threshold.
    """
    order = np.argsort(-probs, kind="stable")
    top1 = float(probs[order[0]])
    margin = top1 - float(probs[order[1]])
    clipped = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    entropy = float(-(clipped * np.log(clipped)).sum() / math.log(len(probs)))
    entropy = min(max(entropy, 0.0), 1.0)

    reasons = []
    if top1 < thresholds.min_confidence:
        reasons.append(_reason("confidence", top1, "<", thresholds.min_confidence))
    if margin < thresholds.min_margin:
        reasons.append(_reason("margin", margin, "<", thresholds.min_margin))
    if entropy > thresholds.max_entropy:
        reasons.append(_reason("entropy", entropy, ">", thresholds.max_entropy))

    return {
        "prediction": "uncertain" if reasons else classes[order[0]],
        "uncertain": bool(reasons),
        "reasons": reasons,
        "top_class": classes[order[0]],
        "confidence": top1,
        "margin": margin,
        "normalized_entropy": entropy,
        "top_k": [
            {"label": classes[i], "probability": float(probs[i])} for i in order[:top_k]
        ],
    }


def _reason(test: str, value: float, op: str, threshold: float) -> dict[str, Any]:
    return {
        "test": test,
        "value": value,
        "threshold": threshold,
        "detail": f"{test} {value:.3f} {op} {threshold:.3f}",
    }
