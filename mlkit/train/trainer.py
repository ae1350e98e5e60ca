"""Training loop: optimisation, model selection, history and resumable state.

``Trainer`` works with any ``nn.Module`` that follows mlkit's batch contract.
A batch is a dict with ``image`` (B, 3, H, W) float, ``text`` (B, D) float,
``has_text`` (B,) bool and ``target`` (B,) long; a text-only batch may leave
out ``image``. The model is called as ``model(image=..., text=...,
has_text=...)`` and returns a dict with at least ``"logits"`` (B, classes).

``fit`` writes into its output directory::

    history.csv, history.json   one row per finished epoch, rewritten each epoch
    best/                       the best model so far (see mlkit.train.checkpoint)
    state/                      everything needed to resume (see mlkit.train._state)

The best model is chosen on validation macro-F1 only; the test split never
influences training.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: no notebook widgets needed

from mlkit._io import atomic_open, write_json
from mlkit.errors import ConfigError, DataError, MlkitError, describe_validation_error
from mlkit.evaluate.metrics import macro_f1
from mlkit.train import _state
from mlkit.train.checkpoint import (
    WEIGHTS_NAME,
    check_tensors,
    load_weights,
    read_card,
    save_checkpoint,
)

log = logging.getLogger(__name__)

BEST_DIR = "best"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
HISTORY_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_macro_f1",
    "val_accuracy",
    "lr_backbone",
    "lr_head",
    "is_best",
    "seconds",  # the whole epoch, validation included
    "train_seconds",  # the training pass
    "data_seconds",  # of which waiting for the data loader's next batch
    "train_samples",
)
#: History columns that measure time, so they differ between identical runs.
TIMING_COLUMNS = ("seconds", "train_seconds", "data_seconds")

# loss_fn(outputs, target): outputs is the model's dict, target the (B,) labels.
LossFn = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


class TrainConfig(BaseModel):
    """How a model is trained.

    ``warmup_epochs`` may be fractional; the learning rate rises linearly over
    that many epochs' steps and then follows a cosine down to zero at the last
    step. ``grad_clip`` is the maximum global gradient norm (None: no
    clipping). ``early_stopping_patience`` is the number of epochs without a
    better validation macro-F1 after which training stops (None: never).
    ``amp`` asks for mixed precision, which is used only on CUDA.
    ``class_balanced``, ``batch_size``, ``num_workers`` and ``seed`` also shape
    the loaders that ``mlkit.train.build_loader`` makes; ``label_smoothing``
    applies to the default loss.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr_backbone: float = Field(default=1e-4, ge=0)
    lr_head: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    early_stopping_patience: int | None = Field(default=5, ge=1)
    class_balanced: bool = False
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    amp: bool = True


def parse_train_config(
    data: Mapping[str, Any] | None, *, source: str = "training config"
) -> TrainConfig:
    """Validate a mapping (e.g. parsed YAML) into a TrainConfig.

    Raises ConfigError listing every unknown key and every value of the wrong
    type or range, each with its field name.
    """
    try:
        return TrainConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"{source}: invalid: {problems}") from exc


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier at optimisation step ``step`` (from 0).

    Rises linearly to 1 over ``warmup_steps`` steps, then decays along a half
    cosine to 0 at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class History:
    """What ``fit`` did: one row per epoch and where the best model is."""

    epochs: list[dict[str, Any]]
    best_epoch: int
    best_val_macro_f1: float
    stopped_early: bool
    out_dir: Path

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / BEST_DIR

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val_macro_f1": self.best_val_macro_f1,
            "stopped_early": self.stopped_early,
        }


@dataclass
class _Progress:
    """Counters that survive an interruption through the saved state."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_metric: float = -math.inf
    since_best: int = 0
    stopped_early: bool = False
    finished: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _EpochStats:
    loss: float
    seconds: float
    data_seconds: float
    samples: int


class Trainer:
    """Trains, validates and applies a classifier following the batch contract.

    ``loss_fn(outputs, target)`` receives the model's output dict and the
    targets and returns a scalar (e.g. ``functools.partial(combined_loss,
    loss_fn=..., aux_weights=...)``); the default is cross-entropy on
    ``outputs["logits"]`` with the config's label smoothing. ``device``
    defaults to CUDA when available, else CPU. The model is moved there.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | Mapping[str, Any],
        loss_fn: LossFn | None = None,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            config = parse_train_config(config)
        self.config = config
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn if loss_fn is not None else self._cross_entropy
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.float32
        if self.use_amp:
            # bfloat16 needs no loss scaling; float16 (older GPUs) does.
            bf16 = torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        train_loader: DataLoader,
        val_loader: DataLoader,
        out_dir: str | Path,
        *,
        resume: bool = False,
        card: Mapping[str, Any] | None = None,
    ) -> History:
        """Train for ``config.epochs`` epochs; keep the best model on val macro-F1.

        Each epoch trains on every batch of ``train_loader``, validates on
        ``val_loader``, appends a row to the history files, saves the model to
        ``out_dir/best`` when validation macro-F1 improved (with ``card`` plus
        a ``training`` entry as its model card) and saves the resumable state.
        Training stops early after ``early_stopping_patience`` epochs without
        improvement. On return the model holds the best weights.

        Unless resuming, the global random generators are seeded from
        ``config.seed``; the loaders' own generators are used as given.
        With ``resume=True`` training continues from ``out_dir/state`` with
        the model, optimizer, schedule, history and random generator states
        of the last finished epoch, so the result equals an uninterrupted run
        given identically built model and loaders. Raises DataError when there
        is no state to resume, the state is damaged, or the loaders have
        another length; ConfigError when the config differs from the saved one.
        Deterministic kernels are enforced on CPU during the fit, so a model
        using an operation without a deterministic CPU version makes torch
        raise RuntimeError.
        """
        out_dir = Path(out_dir)
        config = self.config
        steps_per_epoch = _loader_length(train_loader, "training")
        total_steps = steps_per_epoch * config.epochs
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        optimizer, param_names, base_lrs = self._build_optimizer()
        scaler = self._build_scaler()
        generators = _state.loader_generators([train_loader, val_loader])
        state_dir = out_dir / _state.STATE_DIR

        with _deterministic(self.device):
            if resume:
                progress = self._restore(
                    state_dir,
                    optimizer,
                    param_names,
                    scaler,
                    generators,
                    steps_per_epoch=steps_per_epoch,
                )
            else:
                seed_everything(config.seed)
                progress = _Progress()
            log.info(
                "training %d epoch(s) of %d step(s) on %s from epoch %d",
                config.epochs,
                steps_per_epoch,
                self.device,
                progress.epoch + 1,
            )

            while not progress.finished:
                epoch = progress.epoch + 1
                started = time.perf_counter()
                stats = self._train_epoch(
                    train_loader,
                    optimizer,
                    scaler,
                    base_lrs,
                    progress,
                    epoch=epoch,
                    warmup_steps=warmup_steps,
                    total_steps=total_steps,
                )
                metrics = self.validate(val_loader)

                improved = metrics["macro_f1"] > progress.best_metric
                if improved:
                    progress.best_metric = metrics["macro_f1"]
                    progress.best_epoch = epoch
                    progress.since_best = 0
                    self._save_best(out_dir, card, epoch, metrics)
                else:
                    progress.since_best += 1

                progress.epoch = epoch
                progress.rows.append(
                    {
                        "epoch": epoch,
                        "step": progress.step,
                        "train_loss": stats.loss,
                        "val_loss": metrics["loss"],
                        "val_macro_f1": metrics["macro_f1"],
                        "val_accuracy": metrics["accuracy"],
                        "lr_backbone": _group_lr(optimizer, "backbone"),
                        "lr_head": _group_lr(optimizer, "head"),
                        "is_best": improved,
                        "seconds": round(time.perf_counter() - started, 3),
                        "train_seconds": round(stats.seconds, 3),
                        "data_seconds": round(stats.data_seconds, 3),
                        "train_samples": stats.samples,
                    }
                )
                patience = config.early_stopping_patience
                progress.stopped_early = (
                    patience is not None
                    and progress.since_best >= patience
                    and epoch < config.epochs
                )
                progress.finished = progress.stopped_early or epoch >= config.epochs
                self._write_history(out_dir, progress)
                self._save_state(
                    state_dir,
                    optimizer,
                    param_names,
                    scaler,
                    generators,
                    progress,
                    steps_per_epoch=steps_per_epoch,
                    base_lrs=base_lrs,
                )
                log.info(
                    "epoch %d/%d: train loss %.4f, val loss %.4f, val macro-F1 %.4f%s",
                    epoch,
                    config.epochs,
                    stats.loss,
                    metrics["loss"],
                    metrics["macro_f1"],
                    " (best)" if improved else "",
                )
                if progress.stopped_early:
                    log.info(
                        "early stop after epoch %d: no better val macro-F1 for %d "
                        "epoch(s); best epoch %d",
                        epoch,
                        progress.since_best,
                        progress.best_epoch,
                    )

        self._load_best(out_dir)
        return History(
            epochs=list(progress.rows),
            best_epoch=progress.best_epoch,
            best_val_macro_f1=progress.best_metric,
            stopped_early=progress.stopped_early,
            out_dir=out_dir,
        )

    def _train_epoch(
        self,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        base_lrs: list[float],
        progress: _Progress,
        *,
        epoch: int,
        warmup_steps: int,
        total_steps: int,
    ) -> _EpochStats:
        """One pass over ``loader``: mean training loss per sample, and timings.

        ``data_seconds`` is the time spent waiting for the loader's next batch
        (decoding, augmentation, collation, moving to the device); the rest of
        ``seconds`` is the model's forward and backward passes.
        """
        started = time.perf_counter()
        data_seconds = 0.0
        self.model.train()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{self.config.epochs}",
            leave=False,
            disable=None,
            unit="batch",
        )
        waiting = time.perf_counter()
        for batch in bar:
            batch = self._to_device(batch)
            data_seconds += time.perf_counter() - waiting
            factor = warmup_cosine(progress.step, warmup_steps, total_steps)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor

            with self._autocast():
                outputs = self._forward(batch)
                loss = self.loss_fn(outputs, batch["target"])
            if not torch.isfinite(loss):
                raise MlkitError(
                    f"training loss is {loss.item()} at epoch {epoch}, step "
                    f"{progress.step}; lower the learning rate or check the inputs"
                )

            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if self.config.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            progress.step += 1

            size = int(batch["target"].shape[0])
            loss_sum += float(loss.detach()) * size
            seen += size
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
            waiting = time.perf_counter()
        bar.close()
        return _EpochStats(
            loss=loss_sum / max(seen, 1),
            seconds=time.perf_counter() - started,
            data_seconds=data_seconds,
            samples=seen,
        )

    # ------------------------------------------------------------ evaluation

    def validate(self, loader: DataLoader) -> dict[str, float]:
        """Loss, macro-F1 and accuracy of the model on ``loader``.

        Macro-F1 averages over the classes that occur among the targets or
        the predictions (as scikit-learn does by default). Returns a dict with
        ``loss``, ``macro_f1``, ``accuracy`` and ``n`` (rows). Raises
        DataError when the loader yields no rows.
        """
        return self._metrics(loader, "validation")

    def test(self, loader: DataLoader | None) -> dict[str, float]:
        """The same metrics as ``validate`` on the held-out test split.

        Raises DataError when no loader is given or it yields no rows: a
        missing test split must not pass as a test result.
        """
        if loader is None:
            raise DataError(
                "no test split given to Trainer.test",
                hint="build a loader over the manifest rows whose split is 'test'",
            )
        return self._metrics(loader, "test")

    def predict(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (n, classes) float32 and targets (n,) int64.

        Runs the model in eval mode without gradients, in the loader's order.
        Raises DataError when the loader yields no rows.
        """
        probs, targets, _ = self._run(loader, "prediction")
        return probs, targets

    def _metrics(self, loader: DataLoader, what: str) -> dict[str, float]:
        probs, y_true, loss = self._run(loader, what)
        y_pred = probs.argmax(axis=1)
        labels = np.unique(np.concatenate([y_true, y_pred]))
        return {
            "loss": loss,
            "macro_f1": macro_f1(y_true, y_pred, labels.tolist()),
            "accuracy": float(np.mean(y_true == y_pred)),
            "n": len(y_true),
        }

    def _run(
        self, loader: DataLoader | None, what: str
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Probabilities, targets and mean loss over every row of ``loader``."""
        if loader is None:
            raise DataError(f"no {what} loader given")
        was_training = self.model.training
        self.model.eval()
        probs, targets = [], []
        loss_sum, seen = 0.0, 0
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = self._to_device(batch)
                    with self._autocast():
                        outputs = self._forward(batch)
                        loss = self.loss_fn(outputs, batch["target"])
                    size = int(batch["target"].shape[0])
                    loss_sum += float(loss) * size
                    seen += size
                    probs.append(torch.softmax(outputs["logits"].float(), dim=1).cpu())
                    targets.append(batch["target"].cpu())
        finally:
            self.model.train(was_training)
        if seen == 0:
            raise DataError(
                f"the {what} loader yielded no rows",
                hint=f"check that the manifest has rows for the {what} split",
            )
        return (
            torch.cat(probs).numpy().astype(np.float32, copy=False),
            torch.cat(targets).numpy().astype(np.int64, copy=False),
            loss_sum / seen,
        )

    # -------------------------------------------------------------- helpers

    def _forward(self, batch: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
        outputs = self.model(
            image=batch.get("image"),
            text=batch.get("text"),
            has_text=batch.get("has_text"),
        )
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            raise MlkitError(
                f"{type(self.model).__name__} must return a dict with 'logits'; "
                f"got {type(outputs).__name__}"
            )
        return outputs

    def _to_device(self, batch: Any) -> dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise DataError(
                "a batch must be a dict with keys image, text, has_text and target",
                got=type(batch).__name__,
            )
        if "target" not in batch:
            raise DataError("batch has no 'target'", got=f"keys {sorted(batch)}")
        return {
            key: value.to(self.device, non_blocking=True)
            if isinstance(value, torch.Tensor)
            else value
            for key, value in batch.items()
        }

    def _cross_entropy(
        self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(
            outputs["logits"].float(),
            target,
            label_smoothing=self.config.label_smoothing,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _build_scaler(self) -> torch.amp.GradScaler | None:
        if self.use_amp and self.amp_dtype == torch.float16:
            return torch.amp.GradScaler("cuda")
        return None

    def _build_optimizer(
        self,
    ) -> tuple[torch.optim.Optimizer, list[list[str]], list[float]]:
        """AdamW over the trainable parameters in up to four groups.

        Parameters whose name starts with ``backbone.`` learn at
        ``lr_backbone``, all others at ``lr_head``. Weight decay applies to
        matrices and kernels only; biases and normalisation scales (one
        dimension or fewer) are not decayed, since shrinking them towards zero
        does not regularise the model.
        """
        config = self.config
        buckets: dict[tuple[str, bool], tuple[list[nn.Parameter], list[str]]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            part = "backbone" if name.startswith("backbone.") else "head"
            params, names = buckets.setdefault((part, param.ndim >= 2), ([], []))
            params.append(param)
            names.append(name)
        if not buckets:
            raise ConfigError(
                f"{type(self.model).__name__} has no trainable parameters"
            )

        groups, param_names, base_lrs = [], [], []
        for part in ("backbone", "head"):
            for decay in (True, False):
                if (part, decay) not in buckets:
                    continue
                params, names = buckets[(part, decay)]
                lr = config.lr_backbone if part == "backbone" else config.lr_head
                groups.append(
                    {
                        "params": params,
                        "lr": lr,
                        "weight_decay": config.weight_decay if decay else 0.0,
                        "name": f"{part}" if decay else f"{part}_no_decay",
                    }
                )
                param_names.append(names)
                base_lrs.append(lr)
        return torch.optim.AdamW(groups), param_names, base_lrs

    def _save_best(
        self,
        out_dir: Path,
        card: Mapping[str, Any] | None,
        epoch: int,
        metrics: Mapping[str, float],
    ) -> None:
        full_card = dict(card or {})
        full_card["training"] = {
            "epoch": epoch,
            "val_macro_f1": metrics["macro_f1"],
            "val_accuracy": metrics["accuracy"],
            "val_loss": metrics["loss"],
            "config": self.config.model_dump(),
        }
        save_checkpoint(out_dir / BEST_DIR, self.model, full_card)

    def _load_best(self, out_dir: Path) -> None:
        """Copy the best checkpoint's weights into the model."""
        best = out_dir / BEST_DIR
        card = read_card(best)
        tensors = load_weights(
            best / WEIGHTS_NAME, expected_sha256=card.get("weights_sha256")
        )
        check_tensors(self.model, tensors, source=best / WEIGHTS_NAME)
        self.model.load_state_dict(tensors, strict=True)

    def _write_history(self, out_dir: Path, progress: _Progress) -> None:
        with atomic_open(out_dir / HISTORY_CSV, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(progress.rows)
        write_json(
            out_dir / HISTORY_JSON,
            {
                "epochs": progress.rows,
                "best_epoch": progress.best_epoch,
                "best_val_macro_f1": progress.best_metric,
                "stopped_early": progress.stopped_early,
                "finished": progress.finished,
            },
        )

    def _save_state(
        self,
        state_dir: Path,
        optimizer: torch.optim.Optimizer,
        param_names: list[list[str]],
        scaler: torch.amp.GradScaler | None,
        generators: list[torch.Generator],
        progress: _Progress,
        *,
        steps_per_epoch: int,
        base_lrs: list[float],
    ) -> None:
        meta = {
            "config": self.config.model_dump(),
            "steps_per_epoch": steps_per_epoch,
            "epoch": progress.epoch,
            "step": progress.step,
            "best_epoch": progress.best_epoch,
            "best_val_macro_f1": progress.best_metric,
            "epochs_since_best": progress.since_best,
            "stopped_early": progress.stopped_early,
            "finished": progress.finished,
            "history": progress.rows,
            "scheduler": {
                "kind": "linear_warmup_cosine",
                "step": progress.step,
                "base_lrs": base_lrs,
            },
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
        }
        _state.save_state(
            state_dir,
            model=self.model,
            optimizer=optimizer,
            param_names=param_names,
            generators=generators,
            meta=meta,
        )

    def _restore(
        self,
        state_dir: Path,
        optimizer: torch.optim.Optimizer,
        param_names: list[list[str]],
        scaler: torch.amp.GradScaler | None,
        generators: list[torch.Generator],
        *,
        steps_per_epoch: int,
    ) -> _Progress:
        meta, tensors = _state.load_state(state_dir)
        source = state_dir / _state.META_NAME

        saved_config = meta.get("config", {})
        current = self.config.model_dump()
        changed = sorted(
            key
            for key in set(saved_config) | set(current)
            if saved_config.get(key) != current.get(key)
        )
        if changed:
            detail = ", ".join(
                f"{key} {saved_config.get(key)!r} -> {current.get(key)!r}"
                for key in changed
            )
            raise ConfigError(
                f"{source}: cannot resume with a changed training config: {detail}"
            )
        if meta["steps_per_epoch"] != steps_per_epoch:
            raise DataError(
                "the training loader has another number of batches than in the "
                "interrupted run",
                path=source,
                expected=str(meta["steps_per_epoch"]),
                got=str(steps_per_epoch),
            )

        weights = _state.model_tensors(tensors)
        check_tensors(self.model, weights, source=state_dir / _state.TENSORS_NAME)
        self.model.load_state_dict(weights, strict=True)
        _state.restore_optimizer(optimizer, param_names, meta, tensors, source=source)
        if scaler is not None and meta.get("grad_scaler"):
            scaler.load_state_dict(meta["grad_scaler"])
        _state.restore_rng(meta["rng"], generators, source=source)

        log.info("resuming from %s after epoch %d", state_dir, meta["epoch"])
        return _Progress(
            epoch=meta["epoch"],
            step=meta["step"],
            best_epoch=meta["best_epoch"],
            best_metric=meta["best_val_macro_f1"],
            since_best=meta["epochs_since_best"],
            stopped_early=meta["stopped_early"],
            finished=meta["finished"],
            rows=list(meta["history"]),
        )


def _group_lr(optimizer: torch.optim.Optimizer, part: str) -> float | None:
    """The current learning rate of the first param group of ``part``."""
    for group in optimizer.param_groups:
        if group["name"].startswith(part):
            return float(group["lr"])
    return None


def _loader_length(loader: DataLoader, what: str) -> int:
    """Number of batches per epoch; the schedule needs it in advance."""
    try:
        length = len(loader)
    except TypeError as exc:
        raise DataError(
            f"the {what} loader has no length; the learning-rate schedule needs "
            "the number of batches per epoch",
            got=type(loader).__name__,
        ) from exc
    if length == 0:
        raise DataError(
            f"the {what} loader yields no batches",
            hint=f"check that the manifest has rows for the {what} split",
        )
    return length


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of a fit, then the old settings.

    Limitation: on CUDA some kernels have no deterministic version and cuBLAS
    needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts; there the flag is
    set in warn-only mode, so GPU runs are close to but not guaranteed
    bit-identical. On CPU the mode is strict.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous[2]
        torch.backends.cudnn.benchmark = previous[3]
